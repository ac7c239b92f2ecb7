//! A parser of the Prometheus text format that `/metrics` serves, for
//! tests that check metric values rather than match lines loosely.

use std::collections::BTreeMap;

/// One parsed sample of the Prometheus text format.
#[derive(Debug)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A scrape of `/metrics`, parsed line by line.
#[derive(Debug)]
pub struct Scrape {
    pub types: BTreeMap<String, String>,
    pub samples: Vec<Sample>,
}

impl Scrape {
    /// Parses the Prometheus text format: `# HELP`, `# TYPE` and
    /// `name{label="value",...} number` lines, and nothing else.
    pub fn parse(text: &str) -> Scrape {
        let mut types = BTreeMap::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if line.starts_with("# HELP ") {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
                types.insert(name.to_owned(), kind.to_owned());
                continue;
            }
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("sample without a value: {line:?}"));
            let value = match value {
                "+Inf" => f64::INFINITY,
                number => number
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value: {line:?}")),
            };
            let (name, labels) = match series.split_once('{') {
                None => (series.to_owned(), BTreeMap::new()),
                Some((name, rest)) => {
                    let inner = rest.strip_suffix('}').expect("labels end with }");
                    let labels = inner
                        .split(',')
                        .map(|pair| {
                            let (key, value) = pair.split_once("=\"").expect("label=\"value\"");
                            let value = value.strip_suffix('"').expect("quoted label value");
                            (key.to_owned(), value.to_owned())
                        })
                        .collect();
                    (name.to_owned(), labels)
                }
            };
            samples.push(Sample {
                name,
                labels,
                value,
            });
        }
        Scrape { types, samples }
    }

    /// Returns the value of the one sample named `name` with exactly
    /// `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|sample| {
                sample.name == name
                    && sample.labels.len() == labels.len()
                    && labels.iter().all(|(key, value)| {
                        sample.labels.get(*key).map(String::as_str) == Some(value)
                    })
            })
            .collect();
        assert_eq!(found.len(), 1, "{name} {labels:?} in {self:#?}");
        found[0].value
    }

    /// Returns the value of an unlabelled sample as an integer.
    pub fn count(&self, name: &str) -> u64 {
        self.value(name, &[]) as u64
    }

    /// Returns the sum of every sample named `name`.
    pub fn sum(&self, name: &str) -> u64 {
        let samples = self.samples.iter().filter(|sample| sample.name == name);
        samples.map(|sample| sample.value).sum::<f64>() as u64
    }
}
