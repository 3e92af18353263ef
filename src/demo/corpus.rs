//! A synthetic English corpus that a tiny model can learn: short stories about a fixed world of
//! characters, places, pets and objects whose facts stay consistent across every story (Mia
//! always lives in Oakridge and has a dog called Biscuit), told through many sentence
//! templates, with dialogue and simple counting. Deterministic for a given seed, so the cached
//! teacher and every trial see the same text.

use std::fmt::Write as _;

/// A small deterministic generator (SplitMix64): the corpus must not change when a dependency's
/// random number generator does.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
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

const NAMES_F: [&str; 12] = ["Mia", "Lena", "Rosa", "Ada", "Nora", "Ivy", "Clara", "Zoe", "Hana", "Elsa", "Tara", "June"];
const NAMES_M: [&str; 12] = ["Leo", "Sam", "Omar", "Finn", "Theo", "Ben", "Kai", "Max", "Hugo", "Eli", "Noah", "Ravi"];
const TOWNS: [&str; 8] = ["Oakridge", "Millbrook", "Stonehaven", "Riverton", "Pinecrest", "Brightwater", "Elmstead", "Foxhollow"];
const JOBS: [&str; 10] = ["baker", "teacher", "farmer", "painter", "doctor", "sailor", "gardener", "carpenter", "librarian", "fisher"];
const PETS: [&str; 6] = ["dog", "cat", "rabbit", "parrot", "turtle", "goat"];
const PET_NAMES: [&str; 12] = ["Biscuit", "Pepper", "Shadow", "Clover", "Pickles", "Mango", "Ziggy", "Button", "Olive", "Rocket", "Maple", "Noodle"];
const COLORS: [&str; 8] = ["red", "blue", "green", "yellow", "purple", "orange", "silver", "brown"];
const OBJECTS: [&str; 12] = ["kite", "book", "ball", "lamp", "hat", "box", "key", "cup", "drum", "map", "boat", "bell"];
const PLACES: [&str; 10] = ["market", "park", "river", "library", "garden", "bakery", "harbor", "school", "forest", "hill"];
const ADJS: [&str; 10] = ["small", "old", "shiny", "heavy", "strange", "tiny", "broken", "bright", "wooden", "soft"];
const FOODS: [&str; 8] = ["apples", "bread", "soup", "cherries", "cheese", "pancakes", "carrots", "honey cake"];
const WEATHER: [&str; 6] = ["sunny", "rainy", "windy", "cold", "warm", "cloudy"];
const DAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
const FEELINGS: [&str; 6] = ["happy", "proud", "tired", "surprised", "calm", "excited"];
const NUMBERS: [&str; 13] = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
];

/// One character of the world; their facts never change.
#[derive(Debug, Clone)]
struct Person {
    name: &'static str,
    she: bool,
    town: &'static str,
    job: &'static str,
    pet: &'static str,
    pet_name: &'static str,
    color: &'static str,
    object: &'static str,
    food: &'static str,
    place: &'static str,
}

impl Person {
    fn subj(&self) -> &'static str {
        if self.she { "she" } else { "he" }
    }
    fn obj(&self) -> &'static str {
        if self.she { "her" } else { "him" }
    }
    fn poss(&self) -> &'static str {
        if self.she { "her" } else { "his" }
    }
}

/// The world: built from a fixed seed so that train and eval text share the same facts.
fn world() -> Vec<Person> {
    let mut rng = Rng::new(7);
    let mut people = Vec::new();
    for (i, name) in NAMES_F.iter().chain(NAMES_M.iter()).enumerate() {
        people.push(Person {
            name,
            she: i < NAMES_F.len(),
            town: *rng.pick(&TOWNS),
            job: *rng.pick(&JOBS),
            pet: *rng.pick(&PETS),
            pet_name: PET_NAMES[i % PET_NAMES.len()],
            color: *rng.pick(&COLORS),
            object: *rng.pick(&OBJECTS),
            food: *rng.pick(&FOODS),
            place: *rng.pick(&PLACES),
        });
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

/// One story of several sentences about one or two characters.
fn story(rng: &mut Rng, people: &[Person], out: &mut String) {
    let a = rng.pick(people).clone();
    let mut b = rng.pick(people).clone();
    while b.name == a.name {
        b = rng.pick(people).clone();
    }
    let (s, o, p) = (a.subj(), a.obj(), a.poss());
    let mut lines: Vec<String> = Vec::new();
    // Opening: who and where (always consistent with the world).
    lines.push(match rng.below(4) {
        0 => format!("{} was a {} who lived in {}.", a.name, a.job, a.town),
        1 => format!("In the town of {} there lived a {} named {}.", a.town, a.job, a.name),
        2 => format!("{} lived in {} and worked as a {}.", a.name, a.town, a.job),
        _ => format!("Everyone in {} knew {} the {}.", a.town, a.name, a.job),
    });
    let day = rng.pick(&DAYS);
    let weather = rng.pick(&WEATHER);
    lines.push(match rng.below(3) {
        0 => format!("It was a {weather} {day}."),
        1 => format!("On {day} the sky was {weather}."),
        _ => format!("The {day} morning was {weather}."),
    });
    let n_events = 3 + rng.below(4);
    for _ in 0..n_events {
        let event = match rng.below(13) {
            9 => {
                let (w, pl) = (rng.pick(&WEATHER), rng.pick(&PLACES));
                format!("{} and {} walked to the {pl} on a {w} afternoon.", a.name, b.name)
            }
            10 => {
                let n = 2 + rng.below(9);
                let f = rng.pick(&FOODS);
                format!("At the market, {} bought {} bags of {f} for {}.", a.name, NUMBERS[n], b.name)
            }
            11 => {
                let (c, obj, adj) = (rng.pick(&COLORS), rng.pick(&OBJECTS), rng.pick(&ADJS));
                format!("{} made a {adj} {c} {obj} and gave it to {}.", a.name, b.name)
            }
            12 => {
                let f = rng.pick(&FEELINGS);
                format!("When {} saw {} {}, {} felt {f}.", b.name, a.name, a.pet_name, b.subj())
            }
            0 => format!("{} walked to the {} with {} {}, {}.", cap(s), a.place, p, a.pet, a.pet_name),
            1 => format!("{} {} {} liked to sit by the {}.", cap(p), a.pet, a.pet_name, a.place),
            2 => {
                let adj = rng.pick(&ADJS);
                let where_ = rng.pick(&PLACES);
                format!("Near the {where_}, {} found a {adj} {} {}.", a.name, a.color, a.object)
            }
            3 => format!("{} loved {} more than anything, and {} favorite color was {}.", a.name, a.food, p, a.color),
            4 => {
                let n = 1 + rng.below(6);
                let m = 1 + rng.below(6);
                format!(
                    "{} had {} {}s. {} gave {} {} more, so now {} had {} {}s.",
                    a.name, NUMBERS[n], a.object, b.name, o, NUMBERS[m], s, NUMBERS[n + m], a.object
                )
            }
            5 => format!(
                "\"Where is my {}?\" asked {}. \"I saw it at the {},\" said {}.",
                a.object, a.name, b.place, b.name
            ),
            6 => format!(
                "{} met {}, the {} from {}, and they shared some {}.",
                a.name, b.name, b.job, b.town, b.food
            ),
            7 => format!(
                "{} asked {} about {} {}. \"{} is a good {},\" said {}.",
                b.name, a.name, p, a.pet, a.pet_name, a.pet, a.name
            ),
            _ => {
                let f = rng.pick(&FEELINGS);
                format!("After a long day at the {}, {} felt {f}.", a.place, a.name)
            }
        };
        lines.push(event);
    }
    lines.push(match rng.below(3) {
        0 => format!("Then {} went home to {} with {}.", a.name, a.town, a.pet_name),
        1 => format!("In the evening, {} ate {} and read a book.", a.name, a.food),
        _ => format!("{} smiled, and {} {} {} slept by the door.", a.name, p, a.pet, a.pet_name),
    });
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
        // Every "X lived in T" statement names the same town for the same person.
        for p in world() {
            let towns: std::collections::BTreeSet<&str> = TOWNS
                .iter()
                .copied()
                .filter(|t| text.contains(&format!("{} lived in {t}", p.name)))
                .collect();
            assert!(towns.len() <= 1, "{} lives in {towns:?}", p.name);
        }
        let sentences: std::collections::HashSet<&str> = text.split(['.', '?']).collect();
        let total = text.split(['.', '?']).count();
        // Far from a handful of repeated sentences: most sentences occur only a few times.
        assert!(sentences.len() * 4 > total, "{} distinct of {total} sentences", sentences.len());
    }
}
