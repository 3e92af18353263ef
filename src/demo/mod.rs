//! The offline demo: a generated corpus, a BPE tokenizer trained on it, a tiny Llama teacher
//! pre-trained once and cached, then the research loop and the report.

pub mod corpus;
pub mod teacher;
pub mod tokenizer;
