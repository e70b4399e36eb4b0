use std::collections::HashMap;

/// Counts words.
#[derive(Debug, Default)]
pub struct Counter {
    counts: HashMap<String, usize>,
}

impl Counter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds every word of `text`.
    pub fn add(&mut self, text: &str) {
        for w in text.split_whitespace() {
            *self.counts.entry(w.to_lowercase()).or_insert(0) += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_words() {
        let mut c = Counter::new();
        c.add("a b a");
        assert_eq!(c.counts["a"], 2);
    }
}
