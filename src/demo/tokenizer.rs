//! Trains the demo's byte-level BPE `tokenizer.json` (GPT-2 style, as SmolLM uses) on the
//! generated corpus with the `tokenizers` crate.

use std::path::Path;

use anyhow::{anyhow, Context};
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper, TokenizerBuilder,
};

/// The end-of-text token: id 0, used as BOS and EOS of the teacher.
pub const EOS: &str = "<|endoftext|>";

/// Trains a BPE with `vocab_size` entries on `text` and writes it to `path`; returns the vocab
/// size actually reached.
pub fn train(text: &str, vocab_size: usize, path: &Path) -> anyhow::Result<usize> {
    let mut trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(vec![AddedToken::from(EOS, true)])
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let mut tok =
        TokenizerBuilder::<BPE, NormalizerWrapper, PreTokenizerWrapper, PostProcessorWrapper, DecoderWrapper>::new()
            .with_model(BPE::default())
            .with_normalizer(None)
            .with_pre_tokenizer(Some(ByteLevel::new(false, true, true).into()))
            .with_post_processor(Some(ByteLevel::new(false, true, true).into()))
            .with_decoder(Some(ByteLevel::new(false, true, true).into()))
            .build()
            .map_err(|e| anyhow!("cannot build the tokenizer: {e}"))?;
    // One sequence per story keeps merges from spanning stories.
    let stories = text.split("\n\n").filter(|s| !s.trim().is_empty());
    tok.train(&mut trainer, stories).map_err(|e| anyhow!("tokenizer training failed: {e}"))?;
    let n = tok.get_vocab_size(true);
    tok.save(path, false).map_err(|e| anyhow!("{e}")).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    #[test]
    fn trained_tokenizer_round_trips_and_compresses() {
        let text = super::super::corpus::generate(5, 60_000);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        let n = super::train(&text, 512, &path).unwrap();
        assert!(n <= 512 && n > 300, "vocab {n}");
        let tok = tokenizers::Tokenizer::from_file(&path).unwrap();
        let sample = &text[..2000];
        let enc = tok.encode(sample, false).unwrap();
        assert_eq!(tok.decode(enc.get_ids(), false).unwrap(), sample);
        // BPE must beat bytes by a wide margin on its own training text.
        assert!(enc.get_ids().len() * 2 < sample.len(), "{} tokens for {} bytes", enc.get_ids().len(), sample.len());
        assert_eq!(tok.token_to_id(super::EOS), Some(0));
    }
}
