//! The canonical text of a profile's build settings: everything in a profile that changes
//! the bytes of a binpkg. Its hash goes into every step's fingerprint, so editing CFLAGS
//! (and not the description) makes the next nightly rebuild everything.

use std::fmt::Write;

use super::Profile;

impl Profile {
    pub fn build_settings(&self) -> String {
        let mut out = String::new();
        // `writeln!` into a String cannot fail.
        let mut line = |key: &str, value: &str| {
            let _ = writeln!(out, "{key}={value}");
        };
        line("CHOST", &self.chost);
        line("CFLAGS", &self.cflags);
        line("CXXFLAGS", &self.cxxflags);
        line("LDFLAGS", &self.ldflags);
        line("CC", self.cc.as_deref().unwrap_or(""));
        line("CXX", self.cxx.as_deref().unwrap_or(""));
        line("USE", &self.use_flags.join(" "));
        line("CPU_FLAGS_X86", &self.cpu_flags_x86.join(" "));
        line(
            "PROFILE",
            &format!("{}:{}", self.gentoo_profile_repo, self.gentoo_profile_path),
        );
        line("BINPKG_FORMAT", self.binpkg_format.as_str());
        line("FEATURES", &self.features.join(" "));
        for (atom, flags) in &self.package_use {
            line("package.use", &format!("{atom} {}", flags.join(" ")));
        }
        for repo in &self.repositories {
            line(
                "repository",
                &format!("{} {}", repo.name, repo.revision.as_deref().unwrap_or("")),
            );
        }
        out
    }
}
