//! Label maps: names of sentence labels or tags to class indices and back.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A bijection between names (sentence labels or tags) and class indices `0..len`.
///
/// Built from training data and saved with the model. A name training never saw has no index:
/// [`LabelMap::get`] returns `None`, and the encoder turns it into an ignored target.
///
/// Serialized as `{"names": [...]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "LabelMapFile", into = "LabelMapFile")]
pub struct LabelMap {
    names: Vec<String>,
    index: HashMap<String, usize>,
}

/// The serialized form of a [`LabelMap`].
#[derive(Serialize, Deserialize)]
struct LabelMapFile {
    names: Vec<String>,
}

impl TryFrom<LabelMapFile> for LabelMap {
    type Error = Error;

    fn try_from(file: LabelMapFile) -> Result<Self> {
        Self::from_names(file.names)
    }
}

impl From<LabelMap> for LabelMapFile {
    fn from(map: LabelMap) -> Self {
        Self { names: map.names }
    }
}

impl LabelMap {
    /// Builds a map from the names seen (duplicates allowed): sorted, deduplicated, with `"O"`
    /// first when present (so that for tags, index 0 is "outside").
    ///
    /// ```
    /// let tags = mtl_data::LabelMap::build(["B-loc", "O", "I-loc", "B-loc"]);
    /// assert_eq!(tags.names(), ["O", "B-loc", "I-loc"]);
    /// assert_eq!(tags.get("I-loc"), Some(2));
    /// assert_eq!(tags.get("B-per"), None);
    /// ```
    pub fn build<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        let mut names: Vec<&str> = names.into_iter().collect();
        names.sort_unstable_by(|a, b| (*a != "O", a).cmp(&(*b != "O", b)));
        names.dedup();
        let names = names.into_iter().map(str::to_owned).collect();
        Self::from_unique(names)
    }

    /// A map with exactly these names, in this order.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidSetting`] if a name appears twice.
    pub fn from_names(names: Vec<String>) -> Result<Self> {
        let map = Self::from_unique(names);
        if map.index.len() != map.names.len() {
            let duplicate = map
                .names
                .iter()
                .enumerate()
                .find(|(i, n)| map.index.get(*n) != Some(i))
                .map(|(_, n)| n.clone())
                .unwrap_or_default();
            return Err(Error::InvalidSetting {
                name: "label names",
                value: format!("`{duplicate}` twice"),
                expected: "distinct names",
            });
        }
        Ok(map)
    }

    fn from_unique(names: Vec<String>) -> Self {
        let index = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        Self { names, index }
    }

    /// The index of `name`, or `None` if the map does not know it.
    pub fn get(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// The name of index `id`.
    pub fn name(&self, id: usize) -> Option<&str> {
        self.names.get(id).map(String::as_str)
    }

    /// Number of names.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the map is empty (for instance, no training example had a label).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The names, in index order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Writes the map as JSON.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the file cannot be written.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::json::write(path, self)
    }

    /// Reads a map written by [`LabelMap::save`].
    ///
    /// # Errors
    ///
    /// [`Error::Io`] or [`Error::Json`] naming the file.
    pub fn load(path: &Path) -> Result<Self> {
        crate::json::read(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_sorts_dedups_and_puts_o_first() {
        let map = LabelMap::build(["b", "O", "a", "b", "A"]);
        assert_eq!(map.names(), ["O", "A", "a", "b"]);
        assert_eq!(map.get("b"), Some(3));
        assert_eq!(map.name(0), Some("O"));
        assert_eq!(map.name(4), None);
        assert_eq!(map.len(), 4);
        assert!(LabelMap::build([]).is_empty());
    }

    #[test]
    fn json_round_trip_and_duplicates() -> Result<()> {
        let map = LabelMap::build(["x", "y"]);
        let json = serde_json::to_string(&map).map_err(|source| Error::Json {
            path: "mem".into(),
            source,
        })?;
        assert_eq!(json, r#"{"names":["x","y"]}"#);
        let back: LabelMap = serde_json::from_str(&json).map_err(|source| Error::Json {
            path: "mem".into(),
            source,
        })?;
        assert_eq!(back, map);
        assert!(serde_json::from_str::<LabelMap>(r#"{"names":["x","x"]}"#).is_err());
        assert!(matches!(
            LabelMap::from_names(vec!["a".into(), "b".into(), "a".into()]),
            Err(Error::InvalidSetting { value, .. }) if value.contains("`a`")
        ));
        Ok(())
    }
}
