//! The demo app embedded in lookout, so `lookout serve` shows real workers with nothing but
//! `python3` installed. It is `examples/workers/` verbatim, handed to `python3 -c`.

const LIBRARY: &str = include_str!("../../../examples/workers/lookout_worker.py");
const APP: &str = include_str!("../../../examples/workers/app.py");

/// A `python3 -c` program that defines the `lookout_worker` module from the embedded source,
/// then runs the app as `__main__`. Both sources are registered with `linecache`, so
/// tracebacks quote their lines as they would from files.
pub(crate) fn program() -> String {
    // JSON string literals are valid Python string literals.
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_default();
    format!(
        "import linecache, sys, types\n\
         def load(name, src):\n\
         \x20   linecache.cache[name] = (len(src), None, src.splitlines(True), name)\n\
         \x20   return compile(src, name, 'exec')\n\
         m = types.ModuleType('lookout_worker')\n\
         m.__file__ = 'lookout_worker.py'\n\
         exec(load('lookout_worker.py', {library}), m.__dict__)\n\
         sys.modules['lookout_worker'] = m\n\
         exec(load('app.py', {app}), {{'__name__': '__main__', '__file__': 'app.py'}})\n",
        library = quote(LIBRARY),
        app = quote(APP),
    )
}
