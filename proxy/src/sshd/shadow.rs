//! A copy of the files `sshd-setup` would write, in a private temporary
//! directory, so that its dry run can run the same `sshd -t` and `sshd -T`
//! checks on them as the real run does after writing (a dry run that
//! passes where the real run refuses is worse than none).
//!
//! The copy is the new sshd_config with each `Include` pattern that reads
//! the drop-in spelled out as the files it matches, the drop-in's place
//! taken by the new drop-in in the temporary directory; every other file
//! is read where it is.

use std::path::{Path, PathBuf};

use crate::sshd::include;

/// The temporary directory; removed on drop.
pub struct Shadow {
    dir: PathBuf,
    /// The copy of sshd_config to give `sshd -f`.
    pub config: PathBuf,
}

impl Drop for Shadow {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Writes the copy: `sshd_config` is the new main file's text, `drop_in`
/// the drop-in's path and `lines` its new content.
pub fn make(sshd_config: &str, drop_in: &Path, lines: &str) -> Result<Shadow, String> {
    let dir = private_temp_dir()?;
    let shadow = Shadow {
        config: dir.join("sshd_config"),
        dir,
    };
    let copy = shadow.dir.join(
        drop_in
            .file_name()
            .ok_or_else(|| format!("{} has no file name", drop_in.display()))?,
    );
    let write = |p: &Path, text: &str| {
        std::fs::write(p, text).map_err(|e| format!("cannot write {}: {e}", p.display()))
    };
    write(&copy, lines)?;
    write(&shadow.config, &rewrite(sshd_config, drop_in, &copy))?;
    Ok(shadow)
}

fn private_temp_dir() -> Result<PathBuf, String> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::temp_dir();
    for n in 0..100u32 {
        let dir = base.join(format!("ztssh-sshd-setup-{}-{n}", std::process::id()));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
        }
    }
    Err(format!(
        "cannot find a free temporary directory name in {}",
        base.display()
    ))
}

/// `text` with every `Include` pattern that matches `drop_in` replaced by
/// the files it reads, sorted as glob(3) sorts them, `drop_in` among them
/// (as `copy`).
pub fn rewrite(text: &str, drop_in: &Path, copy: &Path) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some(k) if k.eq_ignore_ascii_case("include") => {
                let files: Vec<String> = words
                    .flat_map(|w| expand(w.trim_matches('"'), drop_in, copy))
                    .collect();
                out.push_str(&format!("Include {}\n", files.join(" ")));
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// One `Include` word: itself (quoted), or the files it matches with
/// `drop_in` (as `copy`) among them. The names are matched and expanded
/// by [`include`], the one glob(3) reading of sshd_config.
fn expand(word: &str, drop_in: &Path, copy: &Path) -> Vec<String> {
    let quote = |p: &Path| format!("\"{}\"", p.display());
    let Ok(abs) = include::absolute(word) else {
        return vec![format!("\"{word}\"")];
    };
    if !include::glob_matches(&abs, drop_in).unwrap_or(false) {
        return vec![format!("\"{word}\"")];
    }
    let mut files: Vec<PathBuf> = include::expand(&abs).unwrap_or_default();
    if !files.iter().any(|p| p == drop_in) {
        files.push(drop_in.to_owned());
    }
    files.sort();
    files
        .iter()
        .map(|p| if p == drop_in { quote(copy) } else { quote(p) })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_include_that_reads_the_drop_in_names_the_copy_in_its_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().join("sshd_config.d");
        std::fs::create_dir(&d).expect("mkdir");
        for n in ["10-site.conf", "99-late.conf", ".hidden.conf", "x.cfg"] {
            std::fs::write(d.join(n), "").expect("write");
        }
        let drop_in = d.join("00-ztssh.conf");
        let copy = Path::new("/tmp/shadow/00-ztssh.conf");
        let text = format!(
            "Port 22\ninclude {}/*.conf /etc/other.conf\nMatch User x\n",
            d.display()
        );
        let out = rewrite(&text, &drop_in, copy);
        let q = |n: &str| format!("\"{}\"", d.join(n).display());
        assert_eq!(
            out,
            format!(
                "Port 22\nInclude \"/tmp/shadow/00-ztssh.conf\" {} {} \"/etc/other.conf\"\nMatch User x\n",
                q("10-site.conf"),
                q("99-late.conf")
            )
        );
        // A drop-in that exists already is read from the copy, once.
        std::fs::write(&drop_in, "old").expect("old");
        let again = rewrite(&text, &drop_in, copy);
        assert_eq!(again, out);
    }
}
