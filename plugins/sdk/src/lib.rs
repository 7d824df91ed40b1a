//! Guest-side bindings of the `lookout:plugin@0.2.0` WIT package — the one place plugins
//! written in Rust bind it.
//!
//! A plugin implements its world's `Guest` trait and exports it:
//!
//! ```ignore
//! use lookout_plugin_sdk::{Batch, Config, Verdict};
//!
//! struct MyPolicy;
//! impl lookout_plugin_sdk::sanitizer::Guest for MyPolicy {
//!     fn init(_config: Config) -> Result<(), String> { Ok(()) }
//!     fn sanitize(batch: Batch) -> Verdict {
//!         let mut verdict = Verdict::new();
//!         for event in batch.events() {
//!             for field in event.fields().filter(|f| f.key == "password") {
//!                 verdict.replace(field.index, "[REDACTED]");
//!             }
//!         }
//!         verdict
//!     }
//! }
//! lookout_plugin_sdk::sanitizer::export_sanitizer!(MyPolicy);
//! ```
//!
//! A batch arrives flat (one buffer of text, fixed-size records pointing into it); the
//! readers below ([`Batch::events`], [`EventRef::fields`], [`EventRef::get`]) hand out
//! borrowed `&str`s, so reading a batch allocates nothing.

/// The `sanitizer` world: `init(config)`, then `sanitize(batch) -> verdict` (edits).
pub mod sanitizer {
    wit_bindgen::generate!({
        world: "sanitizer",
        path: "../../wit",
        additional_derives: [PartialEq],
        pub_export_macro: true,
        export_macro_name: "export_sanitizer",
        default_bindings_module: "lookout_plugin_sdk::sanitizer",
    });
}

/// The `consumer` world: `init(config)`, then `handle(batch) -> result`.
pub mod consumer {
    wit_bindgen::generate!({
        world: "consumer",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "export_consumer",
        default_bindings_module: "lookout_plugin_sdk::consumer",
        with: {
            "lookout:plugin/types@0.2.0": crate::sanitizer::lookout::plugin::types,
            "lookout:plugin/host@0.2.0": crate::sanitizer::lookout::plugin::host,
        },
    });
}

/// The `metrics` world: `describe() -> specs`, then `observe(batch)`.
pub mod metrics {
    wit_bindgen::generate!({
        world: "metrics",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "export_metrics",
        default_bindings_module: "lookout_plugin_sdk::metrics",
        with: {
            "lookout:plugin/types@0.2.0": crate::sanitizer::lookout::plugin::types,
            "lookout:plugin/host@0.2.0": crate::sanitizer::lookout::plugin::host,
        },
    });
}

pub use sanitizer::lookout::plugin::host;
use sanitizer::lookout::plugin::types::ValueType;
pub use sanitizer::lookout::plugin::types::{
    Batch, Change, Config, Edit, MetricKind, MetricSpec, Severity, Verdict,
};

/// A field's value, borrowed from its batch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FieldValue<'a> {
    Str(&'a str),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl<'a> FieldValue<'a> {
    pub fn as_str(self) -> Option<&'a str> {
        match self {
            FieldValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Integers and floats as `f64`.
    pub fn as_f64(self) -> Option<f64> {
        match self {
            FieldValue::Int(i) => Some(i as f64),
            FieldValue::Float(x) => Some(x),
            _ => None,
        }
    }

    pub fn as_bool(self) -> Option<bool> {
        match self {
            FieldValue::Bool(b) => Some(b),
            _ => None,
        }
    }
}

impl Batch {
    /// The string a packed span names ("" for a span outside the text, which the host never
    /// sends).
    pub fn text_of(&self, span: u64) -> &str {
        let start = (span >> 32) as usize;
        let len = (span & 0xffff_ffff) as usize;
        self.text.get(start..start + len).unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The events, in bus order.
    pub fn events(&self) -> impl Iterator<Item = EventRef<'_>> {
        let mut first_field = 0u32;
        (0..self.ids.len()).map(move |index| {
            let count = self.field_counts.get(index).copied().unwrap_or(0);
            let event = EventRef {
                batch: self,
                index,
                first_field,
                field_count: count,
            };
            first_field = first_field.saturating_add(count);
            event
        })
    }

    /// Field `index` of the batch (what [`FieldRef::index`] names).
    fn field(&self, index: usize) -> Option<FieldRef<'_>> {
        let value = *self.values.get(index)?;
        let value = match self.value_types.get(index)? {
            ValueType::Str => FieldValue::Str(self.text_of(value)),
            ValueType::Int => FieldValue::Int(value as i64),
            ValueType::Float => FieldValue::Float(f64::from_bits(value)),
            ValueType::Boolean => FieldValue::Bool(value != 0),
        };
        Some(FieldRef {
            index: index as u32,
            key: self.text_of(*self.keys.get(index)?),
            value,
        })
    }
}

/// One event of a batch.
#[derive(Clone, Copy)]
pub struct EventRef<'a> {
    batch: &'a Batch,
    index: usize,
    first_field: u32,
    field_count: u32,
}

/// One field of an event; `index` names it in a [`Verdict`].
#[derive(Clone, Copy, Debug)]
pub struct FieldRef<'a> {
    pub index: u32,
    pub key: &'a str,
    pub value: FieldValue<'a>,
}

impl<'a> EventRef<'a> {
    /// Its position in the batch; names it in [`Verdict::drop_event`].
    pub fn index(&self) -> u32 {
        self.index as u32
    }

    pub fn id(&self) -> u64 {
        self.batch.ids.get(self.index).copied().unwrap_or_default()
    }

    pub fn kind(&self) -> &'a str {
        self.batch.text_of(
            self.batch
                .kinds
                .get(self.index)
                .copied()
                .unwrap_or_default(),
        )
    }

    pub fn correlation_id(&self) -> Option<&'a str> {
        let span = self.batch.correlation_ids.get(self.index).copied()?;
        Some(self.batch.text_of(span)).filter(|id| !id.is_empty())
    }

    pub fn severity(&self) -> Severity {
        self.batch
            .severities
            .get(self.index)
            .copied()
            .unwrap_or(Severity::Info)
    }

    pub fn timestamp_ns(&self) -> u64 {
        self.batch
            .timestamps_ns
            .get(self.index)
            .copied()
            .unwrap_or_default()
    }

    pub fn fields(&self) -> impl Iterator<Item = FieldRef<'a>> + use<'a> {
        let batch = self.batch;
        let first = self.first_field as usize;
        (first..first + self.field_count as usize).map_while(move |i| batch.field(i))
    }

    /// The value of the first field named `key`.
    pub fn get(&self, key: &str) -> Option<FieldValue<'a>> {
        self.fields().find(|f| f.key == key).map(|f| f.value)
    }
}

impl Verdict {
    /// Changes nothing.
    pub fn new() -> Verdict {
        Verdict {
            edits: Vec::new(),
            dropped: Vec::new(),
        }
    }

    /// The field (by [`FieldRef::index`]) gets `value` instead.
    pub fn replace(&mut self, field: u32, value: impl Into<String>) {
        self.edits.push(Edit {
            field,
            change: Change::Replace(value.into()),
        });
    }

    /// The field goes.
    pub fn remove(&mut self, field: u32) {
        self.edits.push(Edit {
            field,
            change: Change::Remove,
        });
    }

    /// The event (by [`EventRef::index`]) is left out.
    pub fn drop_event(&mut self, event: u32) {
        self.dropped.push(event);
    }
}

impl Default for Verdict {
    fn default() -> Self {
        Verdict::new()
    }
}

/// The value of `key` in a plugin's config, if present.
pub fn config_value<'a>(config: &'a Config, key: &str) -> Option<&'a str> {
    config
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Every known key of a plugin's config must be in `known`; a typo is an `init` error, not a
/// silently ignored setting.
pub fn reject_unknown_keys(config: &Config, known: &[&str]) -> Result<(), String> {
    for (key, _) in config {
        if !known.contains(&key.as_str()) {
            return Err(format!(
                "unknown config key `{key}` (known: {})",
                known.join(", ")
            ));
        }
    }
    Ok(())
}
