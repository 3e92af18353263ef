//! A synthetic English corpus that a tiny model can learn but not trivially: short stories
//! about a fixed world of forty characters whose facts stay consistent across every story
//! (Mia always lives in Oakridge, works as a baker, has a dog called Biscuit, a best friend
//! and a brother), told through many sentence templates, with dialogue, arithmetic in words
//! and quizzes that ask for those facts. Much of what is learnable is memorised facts, so a
//! model's capacity shows in its perplexity: that is what ternary weights cost. Deterministic
//! for a given seed, so the cached teacher and every trial see the same text.

use std::fmt::Write as _;

use autoqat_workspace::hash::SplitMix64;

/// A small deterministic generator (the workspace's SplitMix64): the corpus must not change
/// when a dependency's random number generator does.
#[derive(Debug, Clone)]
pub struct Rng(SplitMix64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(SplitMix64::from_state(seed ^ 0x9E37_79B9_7F4A_7C15))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

const NAMES_F: [&str; 20] = [
    "Mia", "Lena", "Rosa", "Ada", "Nora", "Ivy", "Clara", "Zoe", "Hana", "Elsa", "Tara", "June", "Greta", "Lucy",
    "Maya", "Wren", "Iris", "Petra", "Sofia", "Yara",
];
const NAMES_M: [&str; 20] = [
    "Leo", "Sam", "Omar", "Finn", "Theo", "Ben", "Kai", "Max", "Hugo", "Eli", "Noah", "Ravi", "Felix", "Jonas",
    "Marco", "Otto", "Pablo", "Quinn", "Tomas", "Victor",
];
/// Towns with the landmark each is known for.
const TOWNS: [(&str, &str); 12] = [
    ("Oakridge", "the old stone bridge"),
    ("Millbrook", "the red windmill"),
    ("Stonehaven", "the lighthouse"),
    ("Riverton", "the floating market"),
    ("Pinecrest", "the tall clock tower"),
    ("Brightwater", "the glass greenhouse"),
    ("Elmstead", "the painted wall"),
    ("Foxhollow", "the deep cave"),
    ("Larkspur", "the summer fair"),
    ("Ashford", "the huge oak tree"),
    ("Coldwell", "the frozen lake"),
    ("Westmere", "the train museum"),
];
/// Jobs with the place each job is done at and a thing its worker makes or keeps.
const JOBS: [(&str, &str, &str); 16] = [
    ("baker", "bakery", "bread"),
    ("teacher", "school", "lessons"),
    ("farmer", "farm", "hay"),
    ("painter", "studio", "pictures"),
    ("doctor", "clinic", "medicine"),
    ("sailor", "harbor", "ropes"),
    ("gardener", "garden", "flowers"),
    ("carpenter", "workshop", "chairs"),
    ("librarian", "library", "books"),
    ("fisher", "pier", "nets"),
    ("potter", "kiln", "bowls"),
    ("tailor", "shop", "coats"),
    ("miner", "mine", "lamps"),
    ("singer", "theater", "songs"),
    ("cook", "kitchen", "soup"),
    ("builder", "yard", "walls"),
];
const PETS: [&str; 8] = ["dog", "cat", "rabbit", "parrot", "turtle", "goat", "hamster", "pony"];
const PET_NAMES: [&str; 40] = [
    "Biscuit", "Pepper", "Shadow", "Clover", "Pickles", "Mango", "Ziggy", "Button", "Olive", "Rocket", "Maple",
    "Noodle", "Bean", "Comet", "Daisy", "Fudge", "Ginger", "Hazel", "Jelly", "Kiwi", "Lemon", "Muffin", "Nutmeg",
    "Oreo", "Peanut", "Pumpkin", "Quill", "Rusty", "Sage", "Toffee", "Truffle", "Waffle", "Willow", "Yoyo", "Zest",
    "Acorn", "Bramble", "Cocoa", "Dumpling", "Ember",
];
const COLORS: [&str; 10] = ["red", "blue", "green", "yellow", "purple", "orange", "silver", "brown", "pink", "white"];
const OBJECTS: [&str; 16] = [
    "kite", "book", "ball", "lamp", "hat", "box", "key", "cup", "drum", "map", "boat", "bell", "scarf", "clock",
    "flute", "basket",
];
const PLACES: [&str; 12] =
    ["market", "park", "river", "library", "garden", "bakery", "harbor", "school", "forest", "hill", "beach", "meadow"];
const ADJS: [&str; 14] = [
    "small", "old", "shiny", "heavy", "strange", "tiny", "broken", "bright", "wooden", "soft", "round", "dusty",
    "warm", "golden",
];
const FOODS: [&str; 12] = [
    "apples",
    "bread",
    "soup",
    "cherries",
    "cheese",
    "pancakes",
    "carrots",
    "honey cake",
    "plums",
    "rice",
    "noodles",
    "pears",
];
const WEATHER: [&str; 8] = ["sunny", "rainy", "windy", "cold", "warm", "cloudy", "foggy", "snowy"];
const DAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
const FEELINGS: [&str; 8] = ["happy", "proud", "tired", "surprised", "calm", "excited", "sleepy", "curious"];
const NUMBERS: [&str; 21] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
];

/// One character of the world; their facts never change.
#[derive(Debug, Clone)]
struct Person {
    name: &'static str,
    she: bool,
    town: usize,
    job: usize,
    pet: &'static str,
    pet_name: &'static str,
    color: &'static str,
    object: &'static str,
    food: &'static str,
    place: &'static str,
    age: usize,
    /// Index of the best friend.
    friend: usize,
    /// Index of the sibling (symmetric).
    sibling: usize,
}

impl Person {
    fn subj(&self) -> &'static str {
        if self.she {
            "she"
        } else {
            "he"
        }
    }
    fn obj(&self) -> &'static str {
        if self.she {
            "her"
        } else {
            "him"
        }
    }
    fn poss(&self) -> &'static str {
        if self.she {
            "her"
        } else {
            "his"
        }
    }
    fn town(&self) -> &'static str {
        TOWNS[self.town].0
    }
    fn job(&self) -> &'static str {
        JOBS[self.job].0
    }
    /// "sister" or "brother": what this person is to their sibling.
    fn kin(&self) -> &'static str {
        if self.she {
            "sister"
        } else {
            "brother"
        }
    }
}

/// The world: built from a fixed seed so that train and eval text share the same facts.
fn world() -> Vec<Person> {
    let mut rng = Rng::new(7);
    let names: Vec<&'static str> = NAMES_F.iter().chain(NAMES_M.iter()).copied().collect();
    let n = names.len();
    // Siblings: a fixed random pairing, so that "X's brother is Y" holds both ways.
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let mut sibling = vec![0; n];
    for pair in order.chunks(2) {
        sibling[pair[0]] = pair[1];
        sibling[pair[1]] = pair[0];
    }
    let mut people = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let mut friend = rng.below(n);
        while friend == i || friend == sibling[i] {
            friend = rng.below(n);
        }
        people.push(Person {
            name,
            she: i < NAMES_F.len(),
            town: rng.below(TOWNS.len()),
            job: rng.below(JOBS.len()),
            pet: PETS[rng.below(PETS.len())],
            pet_name: PET_NAMES[i % PET_NAMES.len()],
            color: COLORS[rng.below(COLORS.len())],
            object: OBJECTS[rng.below(OBJECTS.len())],
            food: FOODS[rng.below(FOODS.len())],
            place: PLACES[rng.below(PLACES.len())],
            age: 8 + rng.below(60),
            friend,
            sibling: sibling[i],
        });
    }
    // Siblings share a town.
    for i in 0..n {
        let s = people[i].sibling;
        if s < i {
            people[i].town = people[s].town;
        }
    }
    people
}

fn cap(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// The opening sentence: who the story is about, consistent with the world.
fn opening(rng: &mut Rng, a: &Person) -> String {
    let (job, town) = (a.job(), a.town());
    match rng.below(6) {
        0 => format!("{} was a {job} who lived in {town}.", a.name),
        1 => format!("In the town of {town} there lived a {job} named {}.", a.name),
        2 => format!("{} lived in {town} and worked as a {job}.", a.name),
        3 => format!("Everyone in {town} knew {} the {job}.", a.name),
        4 => format!("{} was {} years old and lived in {town}, the town of {}.", a.name, a.age, TOWNS[a.town].1),
        _ => format!("Every morning {} the {job} walked to the {} in {town}.", a.name, JOBS[a.job].1),
    }
}

/// One event sentence (or two) about `a`, with `b` as the other character.
fn event(rng: &mut Rng, people: &[Person], a: &Person, b: &Person) -> String {
    let (s, o, p) = (a.subj(), a.obj(), a.poss());
    let friend = &people[a.friend];
    let sib = &people[a.sibling];
    match rng.below(22) {
        0 => format!("{} walked to the {} with {p} {}, {}.", cap(s), a.place, a.pet, a.pet_name),
        1 => format!("{} {} {} liked to sit by the {}.", cap(p), a.pet, a.pet_name, a.place),
        2 => {
            let (adj, at) = (rng.pick(&ADJS), rng.pick(&PLACES));
            format!("Near the {at}, {} found a {adj} {} {}.", a.name, a.color, a.object)
        }
        3 => format!("{} loved {} more than anything, and {p} favorite color was {}.", a.name, a.food, a.color),
        4 => {
            let (n, m) = (1 + rng.below(10), 1 + rng.below(10));
            format!(
                "{} had {} {}s. {} gave {o} {} more, so now {s} had {} {}s.",
                a.name,
                NUMBERS[n],
                a.object,
                b.name,
                NUMBERS[m],
                NUMBERS[n + m],
                a.object
            )
        }
        5 => {
            let n = 3 + rng.below(17);
            let m = 1 + rng.below(n - 1);
            let f = rng.pick(&FOODS);
            format!(
                "There were {} bowls of {f} on the table. {} ate {}, and {} were left.",
                NUMBERS[n],
                a.name,
                NUMBERS[m],
                NUMBERS[n - m]
            )
        }
        6 => {
            format!("\"Where is my {}?\" asked {}. \"I saw it at the {},\" said {}.", a.object, a.name, b.place, b.name)
        }
        7 => format!("{} met {}, the {} from {}, and they shared some {}.", a.name, b.name, b.job(), b.town(), b.food),
        8 => format!(
            "{} asked {} about {p} {}. \"{} is a good {},\" said {}.",
            b.name, a.name, a.pet, a.pet_name, a.pet, a.name
        ),
        9 => format!("{} visited {p} best friend {} in {}.", a.name, friend.name, friend.town()),
        10 => format!(
            "{}'s {} {} came over with {} {}, {}.",
            a.name,
            sib.kin(),
            sib.name,
            sib.poss(),
            sib.pet,
            sib.pet_name
        ),
        11 => format!("{} and {p} {} {} cooked {} together.", a.name, sib.kin(), sib.name, sib.food),
        12 => format!("At the {}, {} made {} for {}.", JOBS[a.job].1, a.name, JOBS[a.job].2, b.name),
        13 => format!(
            "{} sent a letter to {}, who lived in {} and worked as a {}.",
            a.name,
            friend.name,
            friend.town(),
            friend.job()
        ),
        14 => {
            let (w, at) = (rng.pick(&WEATHER), rng.pick(&PLACES));
            format!("{} and {} walked to the {at} on a {w} afternoon.", a.name, b.name)
        }
        15 => {
            let n = 2 + rng.below(9);
            let f = rng.pick(&FOODS);
            format!("At the market, {} bought {} bags of {f} for {}.", a.name, NUMBERS[n], b.name)
        }
        16 => {
            let (c, obj, adj) = (rng.pick(&COLORS), rng.pick(&OBJECTS), rng.pick(&ADJS));
            format!("{} made a {adj} {c} {obj} and gave it to {}.", a.name, b.name)
        }
        17 => {
            let f = rng.pick(&FEELINGS);
            format!("When {} saw {} {}, {} felt {f}.", b.name, a.name, a.pet_name, b.subj())
        }
        18 => format!(
            "In {} everyone talked about {}, and {} went to see it with {}.",
            a.town(),
            TOWNS[a.town].1,
            a.name,
            sib.name
        ),
        19 => {
            let years = 1 + rng.below(9);
            format!("{} was {} years old. In {} years {s} would be {}.", a.name, a.age, NUMBERS[years], a.age + years)
        }
        20 => {
            let start = rng.below(12);
            let len = 3 + rng.below(5);
            let seq: Vec<&str> = NUMBERS[start..start + len].to_vec();
            format!("{} counted the {}s in the box: {}.", a.name, a.object, seq.join(", "))
        }
        _ => {
            let f = rng.pick(&FEELINGS);
            format!("After a long day at the {}, {} felt {f}.", a.place, a.name)
        }
    }
}

/// A quiz line about one fact of `a`: only a model that memorised the world gets it right.
fn quiz(rng: &mut Rng, people: &[Person], a: &Person) -> String {
    let p = a.poss();
    let (q, ans) = match rng.below(8) {
        0 => (format!("Where does {} live?", a.name), format!("{}.", a.town())),
        1 => (format!("What is {}'s job?", a.name), format!("{} is a {}.", cap(a.subj()), a.job())),
        2 => (format!("What is the name of {}'s {}?", a.name, a.pet), format!("{}.", a.pet_name)),
        3 => (format!("Who is {}'s best friend?", a.name), format!("{}.", people[a.friend].name)),
        4 => (format!("Who is {}'s {}?", a.name, people[a.sibling].kin()), format!("{}.", people[a.sibling].name)),
        5 => (format!("What is {}'s favorite color?", a.name), format!("{} favorite color is {}.", cap(p), a.color)),
        6 => (format!("How old is {}?", a.name), format!("{} is {}.", cap(a.subj()), a.age)),
        _ => (format!("What does {} love to eat?", a.name), format!("{} loves {}.", cap(a.subj()), a.food)),
    };
    format!("Q: {q} A: {ans}")
}

/// One story of several sentences about one or two characters, sometimes ending with a quiz.
fn story(rng: &mut Rng, people: &[Person], out: &mut String) {
    let a = &people[rng.below(people.len())];
    let mut bi = rng.below(people.len());
    while people[bi].name == a.name {
        bi = rng.below(people.len());
    }
    let b = &people[bi];
    let mut lines: Vec<String> = vec![opening(rng, a)];
    let (day, weather) = (rng.pick(&DAYS), rng.pick(&WEATHER));
    lines.push(match rng.below(3) {
        0 => format!("It was a {weather} {day}."),
        1 => format!("On {day} the sky was {weather}."),
        _ => format!("The {day} morning was {weather}."),
    });
    for _ in 0..3 + rng.below(4) {
        lines.push(event(rng, people, a, b));
    }
    lines.push(match rng.below(3) {
        0 => format!("Then {} went home to {} with {}.", a.name, a.town(), a.pet_name),
        1 => format!("In the evening, {} ate {} and read a book.", a.name, a.food),
        _ => format!("{} smiled, and {} {} {} slept by the door.", a.name, a.poss(), a.pet, a.pet_name),
    });
    if rng.below(2) == 0 {
        for _ in 0..1 + rng.below(3) {
            let who = if rng.below(2) == 0 { a } else { b };
            lines.push(quiz(rng, people, who));
        }
    }
    let _ = writeln!(out, "{}\n", lines.join(" "));
}

/// Stories from `seed` until the text is at least `bytes` long.
pub fn generate(seed: u64, bytes: usize) -> String {
    let people = world();
    let mut rng = Rng::new(seed);
    let mut out = String::with_capacity(bytes + 1024);
    while out.len() < bytes {
        story(&mut rng, &people, &mut out);
    }
    out
}

/// Train and eval text: different stories (different seeds) about the same world.
pub fn train_and_eval(seed: u64, train_bytes: usize, eval_bytes: usize) -> (String, String) {
    (generate(seed, train_bytes), generate(seed.wrapping_add(1_000_003), eval_bytes))
}

/// The held-out text: stories from a seed neither train nor eval text uses, about the same
/// world, for the loop's held-out split (the trial never reads it).
pub fn heldout(bytes: usize) -> String {
    generate(HELDOUT_SEED, bytes)
}

/// Seed of [`heldout`]: far from the seeds of any teacher spec's train and eval text.
const HELDOUT_SEED: u64 = 0x0048_454c_444f_5554;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_for_a_seed_and_different_across_seeds() {
        assert_eq!(generate(1, 20_000), generate(1, 20_000));
        assert_ne!(generate(1, 20_000), generate(2, 20_000));
    }

    #[test]
    fn facts_are_consistent_and_text_is_varied() {
        let text = generate(3, 200_000);
        for p in world() {
            // Every "X lived in T" statement names the same town for the same person.
            let towns: std::collections::BTreeSet<&str> =
                TOWNS.iter().map(|t| t.0).filter(|t| text.contains(&format!("{} lived in {t}", p.name))).collect();
            assert!(towns.len() <= 1, "{} lives in {towns:?}", p.name);
            // Every quiz answer about a best friend names the same person.
            let q = format!("Who is {}'s best friend? A: ", p.name);
            let friends: std::collections::BTreeSet<&str> =
                text.match_indices(&q).filter_map(|(i, _)| text[i + q.len()..].split([' ', '\n']).next()).collect();
            assert!(friends.len() <= 1, "{} has friends {friends:?}", p.name);
        }
        // Siblings are siblings both ways.
        let people = world();
        for (i, p) in people.iter().enumerate() {
            assert_eq!(people[p.sibling].sibling, i, "{}", p.name);
            assert_ne!(p.sibling, i);
        }
        let sentences: std::collections::HashSet<&str> = text.split(['.', '?']).collect();
        let total = text.split(['.', '?']).count();
        // Far from a handful of repeated sentences: most sentences occur only a few times.
        assert!(sentences.len() * 4 > total, "{} distinct of {total} sentences", sentences.len());
    }
}
