//! The C API from C: tests/c/binding_test.c calls every function of agentwire.h, error
//! paths included, against a real daemon, linked against the shared and the static library.

mod common;

use common::{compile, crate_dir, scratch, Daemon, Link, Program};

fn run_binding_test(name: &str, link: Link) {
    let dir = scratch(name);
    let daemon = Daemon::start_with_engine(&dir);
    let exe = compile(
        &dir,
        "binding_test",
        &[crate_dir().join("tests/c/binding_test.c")],
        link,
    );
    let socket = daemon.socket.to_str().unwrap().to_owned();
    let out = Program::spawn(&exe, &[&socket], &dir).finish();
    assert!(out.contains("ok received in place"), "{out}");
    assert!(out.contains("ok streamed"), "{out}");
    assert!(out.trim_end().ends_with("ALL OK"), "{out}");
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_binding_function_works_against_a_real_daemon_through_the_shared_library() {
    run_binding_test("shared", Link::Shared);
}

#[test]
fn the_static_library_links_with_its_native_libraries_and_runs_the_same_program() {
    run_binding_test("static", Link::Static);
}

/// The exported function names, from the header.
fn header_functions() -> Vec<String> {
    let header = std::fs::read_to_string(crate_dir().join("include/agentwire.h")).unwrap();
    let mut names = Vec::new();
    for line in header
        .lines()
        .filter(|l| !l.starts_with("//") && !l.starts_with(' '))
    {
        if let Some(open) = line.find('(') {
            let before = &line[..open];
            if let Some(name) = before.split([' ', '*']).next_back() {
                if name.starts_with("aw_") && !line.starts_with("typedef") {
                    names.push(name.to_owned());
                }
            }
        }
    }
    names
}

#[test]
fn the_c_test_calls_every_function_the_header_declares() {
    let names = header_functions();
    assert!(names.len() > 40, "parsed the header: {names:?}");
    let test = std::fs::read_to_string(crate_dir().join("tests/c/binding_test.c")).unwrap();
    let missing: Vec<_> = names
        .iter()
        .filter(|n| !test.contains(&format!("{n}(")))
        .collect();
    assert!(missing.is_empty(), "binding_test.c never calls {missing:?}");
}
