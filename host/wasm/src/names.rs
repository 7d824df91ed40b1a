//! The names that are lookout's, not a plugin's to take, and why a push may not use one: the
//! names of lookout's own consumers and placeholder sanitizers, a name a plugin of another
//! world holds, and the metric names lookout puts on `/metrics`. The registry asks these at
//! every push (with what runs in its host); `check` asks them offline, of a host with the
//! given sanitizer. The messages are the same either way.
//!
//! This module holds no state and registers nothing: it only compares names.

use std::collections::BTreeSet;

use lookout_core::{BUILT_IN_CONSUMERS, PassThrough, RedactAll, Sanitizer};

use crate::custom_metrics::PluginMetricSet;
use crate::manifest::World;

/// Why `name` is lookout's own — a built-in consumer's or a placeholder sanitizer's — if it is.
pub(crate) fn lookout_own(name: &str) -> Option<String> {
    if BUILT_IN_CONSUMERS.contains(&name) {
        return Some(format!(
            "`{name}` is the name of one of lookout's own consumers ({}): its books and \
             health check are kept under that name; choose another name",
            BUILT_IN_CONSUMERS.join(", ")
        ));
    }
    let placeholders = [RedactAll.name(), PassThrough.name()];
    if placeholders.contains(&name) {
        return Some(format!(
            "`{name}` is the name of one of lookout's own sanitizers ({}); choose another \
             name",
            placeholders.join(", ")
        ));
    }
    None
}

/// Why a plugin of `world` may not take `name`, held by a plugin of world `holder`.
pub(crate) fn held_by(name: &str, holder: World, world: World) -> Option<String> {
    (holder != world).then(|| {
        format!(
            "the name `{name}` belongs to a {} plugin in this host (its calls and events \
             are counted under it, over all its versions, until the host restarts): \
             plugin names are one namespace across worlds; choose another name for this \
             {} plugin",
            holder.as_str(),
            world.as_str()
        )
    })
}

/// Why the metrics of `set` may not be exposed beside lookout's own, whose names on
/// `/metrics` are `lookout_names`, if they may not.
pub(crate) fn lookout_metric(
    set: &PluginMetricSet,
    lookout_names: &BTreeSet<String>,
) -> Option<String> {
    let ours = set.collision_with(lookout_names)?;
    Some(format!(
        "its metrics would collide with lookout's own metric `{ours}` on /metrics; rename \
         the metric or the plugin"
    ))
}
