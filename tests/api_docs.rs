//! docs/api stays in step with include/pulse.h: a page per exported
//! function with the header's prototype, every status code the function's
//! header comment names listed in its page with the right value, the
//! status-code page complete, the config page naming every member, and no
//! page for something the header does not declare.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn header() -> String {
    std::fs::read_to_string(root().join("include/pulse.h")).expect("include/pulse.h")
}

fn page(name: &str) -> String {
    let path = root().join("docs/api").join(format!("{name}.md"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("docs/api/{name}.md is missing: every export needs a page"))
}

/// An exported function: its name, prototype and the doc comment above it.
struct Function {
    name: String,
    prototype: String,
    doc: String,
}

/// The function declarations of the header, with their doc comments.
fn functions(header: &str) -> Vec<Function> {
    let mut found = Vec::new();
    let mut doc = String::new();
    let mut in_doc = false;
    let mut lines = header.lines();
    while let Some(line) = lines.next() {
        let trimmed = line.trim();
        if trimmed.starts_with("/**") {
            in_doc = true;
            doc.clear();
        }
        if in_doc {
            doc.push_str(trimmed);
            doc.push('\n');
            if trimmed.ends_with("*/") {
                in_doc = false;
            }
            continue;
        }
        // A declaration at file scope: `TYPE Name(` ... `);`
        let is_declaration = !line.starts_with([' ', '#', '/', '}', '{'])
            && !trimmed.starts_with("typedef")
            && trimmed.contains('(');
        if !is_declaration {
            continue;
        }
        let mut prototype = trimmed.to_owned();
        while !prototype.ends_with(';') {
            let next = lines.next().expect("declaration ends with `;`");
            prototype.push(' ');
            prototype.push_str(next.trim());
        }
        let before_paren = &prototype[..prototype.find('(').unwrap()];
        let name = before_paren
            .rsplit(|c: char| !(c.is_alphanumeric() || c == '_'))
            .next()
            .unwrap()
            .to_owned();
        found.push(Function {
            name,
            prototype,
            doc: std::mem::take(&mut doc),
        });
    }
    found
}

/// Whitespace-, `struct`- and `[in]`/`[out]`-insensitive form of a C
/// declaration, for comparing a page's Syntax block with the header.
fn normalise(code: &str) -> String {
    let mut text = String::new();
    let mut in_annotation = false;
    for c in code.chars() {
        match c {
            '[' => in_annotation = true,
            ']' => in_annotation = false,
            _ if in_annotation => {}
            c => text.push(c),
        }
    }
    let words: Vec<&str> = text.split_whitespace().filter(|w| *w != "struct").collect();
    let mut out = words.join(" ");
    for punct in ["(", ")", ",", "*", ";", "{", "}"] {
        out = out.replace(&format!(" {punct}"), punct);
        out = out.replace(&format!("{punct} "), punct);
    }
    out
}

/// The text of a `## Heading` section of a page, up to the next `## `.
fn section<'a>(page: &'a str, heading: &str) -> Option<&'a str> {
    let start = page.find(&format!("\n## {heading}\n"))? + heading.len() + 5;
    let rest = &page[start..];
    Some(&rest[..rest.find("\n## ").unwrap_or(rest.len())])
}

/// The first ```c block of a section.
fn code_block(text: &str) -> Option<&str> {
    let start = text.find("```c\n")? + 5;
    let len = text[start..].find("```")?;
    Some(&text[start..start + len])
}

/// `PULSE_STATUS_*` names in a text.
fn status_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("PULSE_STATUS_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// Every `#define PULSE_STATUS_X 0x...` of the header: name -> "0x...".
fn status_defines(header: &str) -> BTreeMap<String, String> {
    header
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            if words.next() != Some("#define") {
                return None;
            }
            let name = words.next()?;
            let value = words.next()?;
            name.starts_with("PULSE_STATUS_")
                .then(|| (name.to_owned(), value.to_owned()))
        })
        .collect()
}

/// The status codes a function's header comment says it returns; "the
/// codes of `Other`" brings in Other's codes.
fn documented_codes(function: &Function, all: &[Function]) -> BTreeSet<String> {
    let mut codes = status_names(&function.doc);
    for other in all {
        if other.name != function.name
            && function.doc.contains(&format!("codes of `{}`", other.name))
        {
            codes.extend(documented_codes(other, all));
        }
    }
    codes
}

/// Parameter names of a prototype.
fn parameters(prototype: &str) -> Vec<String> {
    let inside = &prototype[prototype.find('(').unwrap() + 1..prototype.rfind(')').unwrap()];
    inside
        .split(',')
        .filter(|p| p.trim() != "void" && !p.trim().is_empty())
        .map(|p| {
            p.rsplit(|c: char| !(c.is_alphanumeric() || c == '_'))
                .next()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[test]
fn the_header_exports_the_expected_functions() {
    let names: BTreeSet<String> = functions(&header()).into_iter().map(|f| f.name).collect();
    for name in [
        "EngCreateEngine",
        "EngDestroyEngine",
        "PsWriteMsr",
        "PsReadMsr",
        "PsStatusToString",
        "PsGetVersion",
        "PsGetLastErrorMessage",
    ] {
        assert!(
            names.contains(name),
            "{name} not found in the header: {names:?}"
        );
    }
}

#[test]
fn every_export_has_a_page_in_the_reference_form() {
    let header = header();
    for function in functions(&header) {
        let page = page(&function.name);
        assert!(
            page.starts_with(&format!("# {}\n", function.name)),
            "docs/api/{}.md must start with `# {}`",
            function.name,
            function.name
        );
        for heading in ["Syntax", "Parameters", "Return value", "Remarks"] {
            assert!(
                section(&page, heading).is_some(),
                "docs/api/{}.md lacks `## {heading}`",
                function.name
            );
        }
        let syntax = code_block(section(&page, "Syntax").unwrap())
            .unwrap_or_else(|| panic!("docs/api/{}.md: Syntax has no ```c block", function.name));
        assert_eq!(
            normalise(syntax),
            normalise(&function.prototype),
            "docs/api/{}.md: Syntax differs from include/pulse.h",
            function.name
        );
        let params = section(&page, "Parameters").unwrap();
        for parameter in parameters(&function.prototype) {
            assert!(
                params.contains(&format!("{parameter}`")),
                "docs/api/{}.md: parameter {parameter} is not described",
                function.name
            );
        }
    }
}

#[test]
fn every_status_code_of_a_functions_header_comment_is_on_its_page() {
    let header = header();
    let defines = status_defines(&header);
    let all = functions(&header);
    for function in &all {
        let page = page(&function.name);
        let returns = section(&page, "Return value").expect("Return value section");
        // PsStatusToString names codes as examples; it returns a string.
        if !function.prototype.starts_with("PULSE_STATUS ") {
            continue;
        }
        for code in documented_codes(function, &all) {
            assert!(
                defines.contains_key(&code),
                "the header comment of {} names {code}, which is not defined",
                function.name
            );
            assert!(
                returns.contains(&format!("`{code}`")),
                "docs/api/{}.md: Return value does not list {code}, which the header comment names",
                function.name
            );
        }
        // Every code a page lists is real and shown with its value.
        for line in returns
            .lines()
            .filter(|l| l.starts_with("| `PULSE_STATUS_"))
        {
            let code = status_names(line).into_iter().next().unwrap();
            let value = defines
                .get(&code)
                .unwrap_or_else(|| panic!("docs/api/{}.md lists unknown {code}", function.name));
            assert!(
                line.contains(&format!("| {value} |")),
                "docs/api/{}.md: {code} should show {value}: {line}",
                function.name
            );
        }
    }
}

#[test]
fn the_status_page_lists_every_code_with_its_value_and_meaning() {
    let header = header();
    let page = page("PULSE_STATUS");
    let values = section(&page, "Values").expect("Values section");
    for (code, value) in status_defines(&header) {
        let status =
            pulse::Status(u32::from_str_radix(value.trim_start_matches("0x"), 16).unwrap());
        let line = values
            .lines()
            .find(|l| l.starts_with(&format!("| `{code}` |")))
            .unwrap_or_else(|| panic!("docs/api/PULSE_STATUS.md does not list {code}"));
        assert!(line.contains(&format!("| {value} |")), "{code}: {line}");
        assert_eq!(status.name(), Some(code.as_str()));
        // One text per status: the page shows status.rs's meaning.
        let meaning = status.meaning();
        let sentence = format!("{}{}.", meaning[..1].to_uppercase(), &meaning[1..]);
        assert!(
            line.contains(&format!("| {sentence} |")),
            "{code}: the Meaning column must be status.rs's text `{sentence}`: {line}"
        );
    }
    let listed = values
        .lines()
        .filter(|l| l.starts_with("| `PULSE_STATUS_"))
        .count();
    assert_eq!(
        listed,
        pulse::Status::ALL.len(),
        "a code listed twice or unknown"
    );
}

#[test]
fn the_config_page_shows_the_struct_as_the_header_declares_it() {
    let header = header();
    let start = header
        .find("typedef struct PS_ENGINE_CONFIG {")
        .expect("PS_ENGINE_CONFIG in the header");
    let end = start + header[start..].find("} PS_ENGINE_CONFIG;").unwrap() + 19;
    // The declaration without its comments.
    let declaration: String = header[start..end]
        .lines()
        .filter(|l| {
            let t = l.trim();
            !(t.starts_with("/**") || t.starts_with('*'))
        })
        .collect::<Vec<_>>()
        .join("\n");
    let page = page("PS_ENGINE_CONFIG");
    let syntax = code_block(section(&page, "Syntax").expect("Syntax")).expect("```c block");
    assert_eq!(normalise(syntax), normalise(&declaration));
    let members = section(&page, "Members").expect("Members section");
    for member in ["Size", "Transport", "RequestTimeoutMs", "MaxAttempts"] {
        let described = members
            .lines()
            .any(|l| l.starts_with('`') && l.ends_with(&format!("{member}`")) && l.contains(' '));
        assert!(described, "docs/api/PS_ENGINE_CONFIG.md: member {member}");
    }
}

#[test]
fn no_page_without_a_declaration_and_the_index_links_every_page() {
    let header = header();
    let exported: BTreeSet<String> = functions(&header).into_iter().map(|f| f.name).collect();
    let index = std::fs::read_to_string(root().join("docs/api/README.md")).expect("index");
    for entry in std::fs::read_dir(root().join("docs/api")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let Some(stem) = name.strip_suffix(".md") else {
            continue;
        };
        if stem == "README" {
            continue;
        }
        assert!(
            exported.contains(stem) || ["PS_ENGINE_CONFIG", "PULSE_STATUS"].contains(&stem),
            "docs/api/{name} documents nothing the header declares"
        );
        assert!(
            index.contains(&format!("({name})")),
            "docs/api/README.md does not link {name}"
        );
    }
}

/// The shared library exports exactly the header's functions: nothing
/// undocumented leaks into the ABI (docs/ABI.md).
#[test]
fn the_shared_library_exports_exactly_the_header_functions() {
    // This test binary is target/<profile>/deps/api_docs-<hash>.
    let exe = std::env::current_exe().unwrap();
    let lib = exe.parent().unwrap().parent().unwrap().join("libpulse.so");
    if !lib.exists() {
        eprintln!("skipped: no {}", lib.display());
        return;
    }
    let Ok(out) = std::process::Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(&lib)
        .output()
    else {
        eprintln!("skipped: no nm");
        return;
    };
    assert!(out.status.success(), "nm -D failed");
    let exported: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let (_, kind, name) = (words.next()?, words.next()?, words.next()?);
            (kind == "T").then(|| name.to_owned())
        })
        .collect();
    let declared: BTreeSet<String> = functions(&header()).into_iter().map(|f| f.name).collect();
    assert_eq!(exported, declared, "{}", lib.display());
}
