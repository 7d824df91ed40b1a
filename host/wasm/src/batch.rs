//! The batch every plugin receives (`types.batch` in the WIT) and how a sanitizer's verdict
//! is applied to the host's events.
//!
//! Why columns: with 0.1.0's `list<event>` every key and string value crossed the boundary
//! as its own string (an allocation in the guest going in, another in the host coming back),
//! and wasmtime lowers a list of records one primitive at a time. Here all the text of a
//! batch is one string and everything else is a column of plain integers, which wasmtime
//! copies in one go; a sanitizer answers with edits, so what it leaves alone never comes back.

use lookout_core::{Event, FieldValue, Severity};

use crate::bindings::types as wit;

/// Builds the batch, reusing its buffers from one batch to the next.
pub(crate) struct BatchBuilder {
    batch: wit::Batch,
    /// Per event, the index of its first field (for applying a verdict).
    first_fields: Vec<u32>,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        BatchBuilder {
            batch: wit::Batch {
                text: String::new(),
                ids: Vec::new(),
                timestamps_ns: Vec::new(),
                kinds: Vec::new(),
                correlation_ids: Vec::new(),
                severities: Vec::new(),
                field_counts: Vec::new(),
                keys: Vec::new(),
                value_types: Vec::new(),
                values: Vec::new(),
            },
            first_fields: Vec::new(),
        }
    }
}

/// Keeps a builder from holding on to the buffers of one exceptionally large batch.
const KEEP_TEXT_BYTES: usize = 4 << 20;

/// `start << 32 | len`, as the WIT packs a span.
fn pack(start: u32, len: u32) -> u64 {
    (u64::from(start) << 32) | u64::from(len)
}

impl BatchBuilder {
    /// The batch form of `events`. Errors only when the batch's text passes 4 GiB, which a
    /// span cannot address.
    pub(crate) fn fill(&mut self, events: &[Event]) -> Result<&wit::Batch, String> {
        let b = &mut self.batch;
        b.text.clear();
        if b.text.capacity() > KEEP_TEXT_BYTES {
            b.text.shrink_to(KEEP_TEXT_BYTES);
        }
        for column in [&mut b.ids, &mut b.timestamps_ns, &mut b.kinds] {
            column.clear();
        }
        for column in [&mut b.correlation_ids, &mut b.keys, &mut b.values] {
            column.clear();
        }
        b.severities.clear();
        b.field_counts.clear();
        b.value_types.clear();
        self.first_fields.clear();
        let text = &mut b.text;
        let mut span = |s: &str| -> Result<u64, String> {
            let start = u32::try_from(text.len()).map_err(|_| too_large())?;
            let len = u32::try_from(s.len()).map_err(|_| too_large())?;
            start.checked_add(len).ok_or_else(too_large)?;
            text.push_str(s);
            Ok(pack(start, len))
        };
        for event in events {
            self.first_fields.push(b.keys.len() as u32);
            b.ids.push(event.id);
            b.timestamps_ns.push(event.timestamp_ns);
            b.kinds.push(span(&event.kind)?);
            b.correlation_ids
                .push(span(event.correlation_id.as_deref().unwrap_or_default())?);
            b.severities.push(severity(event.severity));
            b.field_counts.push(event.fields.len() as u32);
            for field in &event.fields {
                b.keys.push(span(&field.key)?);
                let (ty, value) = match &field.value {
                    FieldValue::Str(s) => (wit::ValueType::Str, span(s)?),
                    FieldValue::Int(i) => (wit::ValueType::Int, *i as u64),
                    FieldValue::Float(x) => (wit::ValueType::Float, x.to_bits()),
                    FieldValue::Bool(v) => (wit::ValueType::Boolean, u64::from(*v)),
                };
                b.value_types.push(ty);
                b.values.push(value);
            }
        }
        Ok(&self.batch)
    }

    /// Applies a sanitizer's verdict to the events this batch was last filled from. The
    /// whole verdict is checked first: one edit naming a field or event the batch does not
    /// have refuses all of it (the caller then fails the batch closed), so a half-applied
    /// verdict never goes out. `on_replace` sees each replacement as it is applied (for the
    /// redaction counts), never one of a refused verdict.
    pub(crate) fn apply(
        &self,
        verdict: wit::Verdict,
        events: &mut Vec<Event>,
        mut on_replace: impl FnMut(&str),
    ) -> Result<(), String> {
        let fields = self.batch.keys.len();
        if let Some(edit) = verdict.edits.iter().find(|e| e.field as usize >= fields) {
            return Err(format!(
                "its verdict edits field {} of a batch of {fields} fields",
                edit.field
            ));
        }
        if let Some(&event) = verdict
            .dropped
            .iter()
            .find(|&&e| e as usize >= events.len())
        {
            return Err(format!(
                "its verdict drops event {event} of a batch of {} events",
                events.len()
            ));
        }
        // Field index → (event, position in the event): events are in field order.
        let locate = |field: u32| {
            let event = self.first_fields.partition_point(|&first| first <= field) - 1;
            (event, (field - self.first_fields[event]) as usize)
        };
        let mut removed = Vec::new();
        for edit in verdict.edits {
            let (event, at) = locate(edit.field);
            match edit.change {
                wit::Change::Replace(value) => {
                    on_replace(&value);
                    events[event].fields[at].value = FieldValue::Str(value)
                }
                wit::Change::Remove => removed.push((event, at)),
            }
        }
        // From the back, so earlier positions stay valid.
        removed.sort_unstable_by(|a, b| b.cmp(a));
        removed.dedup();
        for (event, at) in removed {
            events[event].fields.remove(at);
        }
        if !verdict.dropped.is_empty() {
            let mut dropped = verdict.dropped;
            dropped.sort_unstable();
            let mut index = 0u32;
            let mut next = dropped.iter().peekable();
            events.retain(|_| {
                let keep = next.peek() != Some(&&index);
                while next.peek() == Some(&&index) {
                    next.next();
                }
                index += 1;
                keep
            });
        }
        Ok(())
    }
}

fn too_large() -> String {
    "the batch's text passes 4 GiB, more than a plugin can be handed".to_string()
}

fn severity(s: Severity) -> wit::Severity {
    match s {
        Severity::Trace => wit::Severity::Trace,
        Severity::Debug => wit::Severity::Debug,
        Severity::Info => wit::Severity::Info,
        Severity::Warn => wit::Severity::Warn,
        Severity::Error => wit::Severity::Error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events() -> Vec<Event> {
        vec![
            Event::new("a.one")
                .correlation_id("c-1")
                .field("user", "amy")
                .field("password", "hunter2")
                .field("n", 7i64),
            Event::new("b.two").field("token", "xyz"),
            Event::new("c.three")
                .field("note", "hi")
                .field("flag", true),
        ]
    }

    fn edit(field: u32, change: wit::Change) -> wit::Edit {
        wit::Edit { field, change }
    }

    #[test]
    fn the_batch_points_at_every_string() {
        let events = events();
        let mut builder = BatchBuilder::default();
        let batch = builder.fill(&events).unwrap();
        let text = |span: u64| {
            let (start, len) = ((span >> 32) as usize, (span & 0xffff_ffff) as usize);
            &batch.text[start..start + len]
        };
        assert_eq!(batch.ids.len(), 3);
        assert_eq!(batch.keys.len(), 6);
        assert_eq!(text(batch.kinds[0]), "a.one");
        assert_eq!(text(batch.correlation_ids[0]), "c-1");
        assert_eq!(text(batch.correlation_ids[1]), "");
        assert_eq!(batch.field_counts, [3, 1, 2]);
        assert_eq!(text(batch.keys[1]), "password");
        assert!(matches!(batch.value_types[1], wit::ValueType::Str));
        assert_eq!(text(batch.values[1]), "hunter2");
        assert!(matches!(batch.value_types[2], wit::ValueType::Int));
        assert_eq!(batch.values[2] as i64, 7);
        assert!(matches!(batch.value_types[5], wit::ValueType::Boolean));
        assert_eq!(batch.values[5], 1);
        // Refilled, it holds only the new batch.
        let batch = builder.fill(&events[1..2]).unwrap();
        assert_eq!((batch.ids.len(), batch.keys.len()), (1, 1));
        assert_eq!(batch.text, "b.twotokenxyz");
    }

    #[test]
    fn a_verdict_replaces_removes_and_drops() {
        let mut events = events();
        let mut builder = BatchBuilder::default();
        builder.fill(&events).unwrap();
        let verdict = wit::Verdict {
            edits: vec![
                edit(1, wit::Change::Replace("[REDACTED]".into())),
                edit(3, wit::Change::Remove),
                edit(0, wit::Change::Remove),
                edit(0, wit::Change::Remove),
            ],
            dropped: vec![2, 2],
        };
        let mut replaced = Vec::new();
        builder
            .apply(verdict, &mut events, |v| replaced.push(v.to_string()))
            .unwrap();
        assert_eq!(replaced, ["[REDACTED]"], "each replacement is seen once");
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].fields.len(), 2);
        assert_eq!(events[0].get("user"), None);
        assert_eq!(
            events[0].get("password"),
            Some(&FieldValue::Str("[REDACTED]".into()))
        );
        assert_eq!(events[0].get("n"), Some(&FieldValue::Int(7)));
        assert!(events[1].fields.is_empty());
    }

    #[test]
    fn a_verdict_naming_what_is_not_there_changes_nothing() {
        for verdict in [
            wit::Verdict {
                edits: vec![
                    edit(1, wit::Change::Replace("x".into())),
                    edit(6, wit::Change::Remove),
                ],
                dropped: vec![],
            },
            wit::Verdict {
                edits: vec![edit(1, wit::Change::Replace("x".into()))],
                dropped: vec![3],
            },
        ] {
            let mut events = events();
            let before = events.clone();
            let mut builder = BatchBuilder::default();
            builder.fill(&events).unwrap();
            let mut replaced = 0;
            let err = builder
                .apply(verdict, &mut events, |_| replaced += 1)
                .unwrap_err();
            assert!(err.contains("of a batch of"), "{err}");
            assert_eq!(events, before);
            assert_eq!(replaced, 0, "a refused verdict counts no redaction");
        }
    }
}
