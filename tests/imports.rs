//! The client's module graph, read from the source: no module imports from a module that imports it
//! (directly or round a longer circle), and the client (its modules and its binary) uses nothing of
//! the server's, only the modules both sides share. A circle or a server import fails here, naming
//! the modules, before it costs a reader anything.
//!
//! An import is any path outside a test module: `use super::x::Y`, `crate::x::f()`, a child's
//! `x::f()` from its parent, a re-export (`pub use`). Importing an item that a parent re-exports
//! is importing the parent, so a child must name the module that defines it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// What the client may use outside `client`: the modules both sides share.
const SHARED: &[&str] = &[
    "connection",
    "discovery",
    "identity",
    "protocol",
    "rate_limit",
    "rules",
    "runtime",
    "sealed",
    "tls",
    "transfer",
];

type Module = Vec<String>;

#[test]
fn no_client_module_imports_from_a_module_that_imports_it() {
    let graph = module_graph();
    let circles: Vec<String> = circles(&graph)
        .into_iter()
        .filter(|circle| {
            circle
                .iter()
                .any(|m| m.first().map(String::as_str) == Some("client"))
        })
        .map(|circle| circle.iter().map(name).collect::<Vec<_>>().join(" → "))
        .collect();
    assert!(circles.is_empty(), "import circles: {circles:#?}");
}

#[test]
fn the_client_uses_nothing_of_the_servers() {
    let graph = module_graph();
    let mut foreign = BTreeSet::new();
    for (from, targets) in &graph {
        if from.first().map(String::as_str) != Some("client") {
            continue;
        }
        for to in targets {
            let top = to.first().map(String::as_str).unwrap_or("crate");
            if top != "client" && !SHARED.contains(&top) {
                foreign.insert(format!("{} → {}", name(from), name(to)));
            }
        }
    }
    // The binary names the library by its crate name.
    let binary = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bin/p2pchat-client.rs");
    let binary = fs::read_to_string(binary).expect("read the client binary");
    for path in paths(&code_of(&binary)) {
        if let [krate, top, ..] = &path[..] {
            // An item of the crate root (`p2pchat::HELP_TEMPLATE`) belongs to no side.
            let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
            let is_module =
                src.join(format!("{top}.rs")).exists() || src.join(top).join("mod.rs").exists();
            if krate == "p2pchat" && is_module && top != "client" && !SHARED.contains(&top.as_str())
            {
                foreign.insert(format!("p2pchat-client → {top}"));
            }
        }
    }
    assert!(foreign.is_empty(), "the client imports: {foreign:#?}");
}

#[test]
fn the_reader_sees_a_circle_where_there_is_one() {
    // The circle this test guards against, as it was: the parent calls the chat loop, which
    // takes the parent's type.
    let files = [
        (vec!["client".to_string()], "mod session;\nfn run() { session::run(); }".to_string()),
        (
            vec!["client".to_string(), "session".to_string()],
            "use super::{send, Client};\n// super::ignored\n#[cfg(test)]\nmod tests { use crate::x; }"
                .to_string(),
        ),
    ];
    let graph = graph_of(&files);
    assert_eq!(
        circles(&graph)
            .iter()
            .map(|c| c.iter().map(name).collect::<Vec<_>>())
            .collect::<Vec<_>>(),
        [["client", "client::session"]],
        "{graph:?}"
    );
}

fn name(module: &Module) -> String {
    if module.is_empty() {
        "crate".into()
    } else {
        module.join("::")
    }
}

/// Every library module (not the binaries) and the modules it imports.
fn module_graph() -> BTreeMap<Module, BTreeSet<Module>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect(&root, &root, &mut files);
    graph_of(&files)
}

fn collect(root: &Path, dir: &Path, files: &mut Vec<(Module, String)>) {
    for entry in fs::read_dir(dir).expect("read src") {
        let path = entry.expect("read src").path();
        let relative = path.strip_prefix(root).expect("under src");
        if relative.starts_with("bin") {
            continue;
        }
        if path.is_dir() {
            collect(root, &path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let mut module: Module = relative
                .with_extension("")
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            if matches!(module.last().map(String::as_str), Some("mod" | "lib")) {
                module.pop();
            }
            files.push((
                module,
                fs::read_to_string(&path).expect("read a source file"),
            ));
        }
    }
}

fn graph_of(files: &[(Module, String)]) -> BTreeMap<Module, BTreeSet<Module>> {
    let known: BTreeSet<Module> = files.iter().map(|(m, _)| m.clone()).collect();
    let mut graph = BTreeMap::new();
    for (module, text) in files {
        let mut targets = BTreeSet::new();
        for path in paths(&code_of(text)) {
            if let Some(target) = resolve(module, &path, &known) {
                if &target != module {
                    targets.insert(target);
                }
            }
        }
        graph.insert(module.clone(), targets);
    }
    graph
}

/// The text without its test module (kept last, by the house's convention), its comments, and
/// `pub(super)`-like visibilities (which are no imports).
fn code_of(text: &str) -> String {
    let text = text
        .split("#[cfg(test)]\nmod tests")
        .next()
        .unwrap_or_default();
    text.lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
        .replace("pub(super)", "pub")
        .replace("pub(crate)", "pub")
}

/// Every path of two segments or more, with `a::{b, c::d}` groups spread out.
fn paths(code: &str) -> Vec<Vec<String>> {
    let chars: Vec<char> = code.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let starts = is_ident(chars[i])
            && !chars[i].is_ascii_digit()
            && (i == 0 || !(is_ident(chars[i - 1]) || chars[i - 1] == ':'));
        if starts {
            let (end, spread) = path_at(&chars, i);
            found.extend(spread.into_iter().filter(|p| p.len() >= 2));
            i = end.max(i + 1);
        } else {
            i += 1;
        }
    }
    found
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The path starting at `i`, and where it ends.
fn path_at(chars: &[char], mut i: usize) -> (usize, Vec<Vec<String>>) {
    let mut prefix = Vec::new();
    loop {
        let start = i;
        while i < chars.len() && is_ident(chars[i]) {
            i += 1;
        }
        prefix.push(chars[start..i].iter().collect::<String>());
        if !(chars.get(i) == Some(&':') && chars.get(i + 1) == Some(&':')) {
            return (i, vec![prefix]);
        }
        i += 2;
        if chars.get(i) == Some(&'{') {
            // A group: each item is a path of its own after the prefix.
            let mut spread = Vec::new();
            i += 1;
            loop {
                while i < chars.len() && (chars[i].is_whitespace() || chars[i] == ',') {
                    i += 1;
                }
                match chars.get(i) {
                    None => return (i, spread),
                    Some('}') => return (i + 1, spread),
                    Some(&c) if is_ident(c) => {
                        let (end, items) = path_at(chars, i);
                        spread.extend(items.into_iter().map(|item| {
                            let mut path = prefix.clone();
                            path.extend(item.into_iter().filter(|s| s != "self"));
                            path
                        }));
                        i = end;
                        // `as NAME` renames: skip to the next item.
                        while i < chars.len() && !matches!(chars[i], ',' | '}') {
                            i += 1;
                        }
                    }
                    Some(_) => i += 1,
                }
            }
        }
        if !chars.get(i).is_some_and(|&c| is_ident(c)) {
            return (i, vec![prefix]);
        }
    }
}

/// The module a path imports from, if it names one of the crate's.
fn resolve(module: &Module, path: &[String], known: &BTreeSet<Module>) -> Option<Module> {
    let mut segments = path.iter().peekable();
    let mut base: Module = match segments.peek().map(|s| s.as_str()) {
        Some("crate") => {
            segments.next();
            Vec::new()
        }
        Some("super" | "self") => {
            let mut base = module.clone();
            while let Some(s) = segments.next_if(|s| matches!(s.as_str(), "super" | "self")) {
                if s == "super" {
                    base.pop()?;
                }
            }
            base
        }
        Some(first) => {
            // A child module named from its parent.
            let mut child = module.clone();
            child.push(first.to_string());
            if !known.contains(&child) {
                return None;
            }
            module.clone()
        }
        None => return None,
    };
    let mut target = base.clone();
    for segment in segments {
        base.push(segment.clone());
        if known.contains(&base) {
            target = base.clone();
        }
    }
    Some(target)
}

/// Every group of modules that import each other round a circle (Tarjan's strongly connected
/// components of two or more).
fn circles(graph: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct Walk<'a> {
        graph: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        found: Vec<Vec<Module>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a Module) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            for w in self.graph.get(v).into_iter().flatten() {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.stack.contains(&w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut circle = Vec::new();
                while let Some(w) = self.stack.pop() {
                    circle.push(w.clone());
                    if w == v {
                        break;
                    }
                }
                if circle.len() > 1 {
                    circle.sort();
                    self.found.push(circle);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v) {
            walk.visit(v);
        }
    }
    walk.found
}
