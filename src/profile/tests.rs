use super::*;

fn problems(text: &str) -> Vec<String> {
    match Profile::parse(Path::new("/p/t.toml"), text) {
        Ok(_) => Vec::new(),
        Err(ProfileError::Invalid(p)) => p.iter().map(ToString::to_string).collect(),
        Err(e) => vec![e.to_string()],
    }
}

const GOOD: &str = r#"
name = "t"
chost = "x86_64-pc-linux-gnu"
cflags = "-O2 -march=x86-64-v3"
gentoo_profile = "farm-test:farm/amd64"
[[repository]]
name = "farm-test"
location = "repo"
"#;

#[test]
fn good_profile_loads_with_relative_location_resolved() {
    let p = Profile::parse(Path::new("/p/t.toml"), GOOD).unwrap();
    assert_eq!(p.repositories[0].location, PathBuf::from("/p/repo"));
    assert_eq!(p.cxxflags, p.cflags);
    assert_eq!(
        p.main_repository().map(|r| r.name.as_str()),
        Some("farm-test")
    );
}

#[test]
fn unknown_key_names_line_and_key() {
    let text = GOOD.replace("[[repository]]", "colour = 1\n[[repository]]");
    let p = problems(&text);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("/p/t.toml:6: colour: unknown field `colour`"),
        "{}",
        p[0]
    );
    let nested = format!("{GOOD}\n[distcc]\nhots = [\"a\"]\n");
    let p = problems(&nested);
    assert!(
        p[0].contains(": distcc.hots: unknown field `hots`"),
        "{}",
        p[0]
    );
}

#[test]
fn missing_chost_and_native_refused() {
    let text = GOOD
        .replace("chost = \"x86_64-pc-linux-gnu\"\n", "")
        .replace("x86-64-v3", "native");
    let p = problems(&text);
    assert!(
        p.iter().any(|l| l.starts_with("/p/t.toml: chost: missing")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|l| l.starts_with("/p/t.toml: cflags: -march=native is refused")),
        "{p:?}"
    );
}

#[test]
fn atoms_checked() {
    for good in [
        "app-misc/hello",
        "=dev-lang/php-8.2.5*",
        ">=dev-libs/openssl-3.0.13:0/3",
        "dev-lang/php:8.2::gentoo[fpm,-cgi]",
        "<sys-libs/glibc-2.40-r1",
    ] {
        assert_eq!(checks::check_atom(good), Ok(()), "{good}");
    }
    for bad in [
        "hello",
        "app-misc/hello-1.0",
        "=app-misc/hello",
        ">=app-misc/hello-x",
        "app-misc/hello:",
        "!app-misc/hello",
        "app-misc/hello[",
        "a/b/c",
    ] {
        assert!(checks::check_atom(bad).is_err(), "{bad}");
    }
    let text = format!("{GOOD}\n[packages]\natoms = [\"app-misc/hello-1.0\"]\n");
    let p = problems(&text);
    assert!(
        p[0].starts_with("/p/t.toml: packages.atoms: \"app-misc/hello-1.0\""),
        "{p:?}"
    );
}

#[test]
fn distcc_hosts_checked() {
    for good in [
        "127.0.0.1",
        "127.0.0.1:3632/4",
        "build1.example.net/16,lzo",
        "localhost/2",
        "@helper",
        "user@helper/4",
        "[::1]:3632",
        "--randomize",
        "--localslots=2",
        "h,lzo,cpp",
    ] {
        assert_eq!(checks::check_distcc_host(good), Ok(()), "{good}");
    }
    for bad in [
        "",
        "host:0",
        "host:99999",
        "host/0",
        "host/x",
        "host,zip",
        "a b",
        "--localslots=0",
        "[::1",
        "-host",
    ] {
        assert!(checks::check_distcc_host(bad).is_err(), "{bad}");
    }
}

#[test]
fn world_file_atoms_are_read_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("world"),
        "# production\napp-misc/hello\n\ndev-lang/php:8.2\n",
    )
    .unwrap();
    let text =
        format!("{GOOD}\n[packages]\natoms = [\"app-misc/greeter\"]\nworld_file = \"world\"\n");
    let p = Profile::parse(&dir.path().join("t.toml"), &text).unwrap();
    assert_eq!(
        p.set_atoms().unwrap(),
        vec!["app-misc/greeter", "app-misc/hello", "dev-lang/php:8.2"]
    );
    std::fs::write(dir.path().join("world"), "app-misc/hello-1\n").unwrap();
    let err = p.set_atoms().unwrap_err().to_string();
    assert!(err.contains("world:1: atom: \"app-misc/hello-1\""), "{err}");
}
