//! The private MariaDB and the WordPress document root of the WordPress end-to-end test
//! (`crates/gateway/tests/wordpress.rs`). Skipped with a message where MariaDB or
//! WordPress is not installed (`scripts/ensure-php-fpm.sh --with-wordpress`).

use std::path::Path;
use std::process::Command;

use fpm_harness::{mariadb_binaries, wordpress_config_fixture, MariaDb, WordPressRoot};

/// `SELECT DATABASE()` in `database` as `user` with `password`: the name, or the
/// client's error.
fn select_database(db: &MariaDb, user: &str, password: &str, database: &str) -> String {
    let client = mariadb_binaries().expect("MariaDB's client").client;
    let output = Command::new(client)
        .arg("--no-defaults")
        .arg(format!("--socket={}", db.socket_path().display()))
        .arg(format!("--user={user}"))
        .arg(format!("--password={password}"))
        .args(["--batch", "--skip-column-names", database, "--execute"])
        .arg("SELECT DATABASE()")
        .output()
        .expect("run the client");
    if output.status.success() {
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    } else {
        String::from_utf8_lossy(&output.stderr).into_owned()
    }
}

#[test]
fn mariadb_gives_each_user_its_own_database_and_shuts_down_cleanly() {
    if let Err(err) = mariadb_binaries() {
        eprintln!("SKIPPED mariadb: {err}");
        return;
    }
    let mut db = MariaDb::start().expect("MariaDB starts");
    db.create_database("shop", "shop_user", "pw-shop")
        .expect("create shop");
    db.create_database("blog", "blog_user", "pw-blog")
        .expect("create blog");
    assert_eq!(select_database(&db, "shop_user", "pw-shop", "shop"), "shop");
    let denied = select_database(&db, "shop_user", "pw-shop", "blog");
    assert!(denied.contains("Access denied"), "{denied}");
    let wrong = select_database(&db, "shop_user", "pw-blog", "shop");
    assert!(wrong.contains("Access denied"), "{wrong}");
    assert!(db.php_host().starts_with("localhost:/"));
    // Names are checked before they reach SQL.
    assert!(db.create_database("x`; DROP", "u", "p").is_err());
    assert!(db.create_database("ok", "u", "it's").is_err());

    let socket = db.socket_path();
    let log = db.log_path();
    db.stop().expect("stop");
    assert!(!socket.exists(), "the socket went with the server");
    let text = std::fs::read_to_string(&log).expect("error log");
    assert!(text.contains("Shutdown complete"), "{text}");
}

#[test]
fn the_wordpress_root_copies_what_finds_its_config_by_path_and_uses_ours() {
    if let Err(err) = fpm_harness::wordpress_dir() {
        eprintln!("SKIPPED wordpress root: {err}");
        return;
    }
    let fixture = wordpress_config_fixture();
    let root = WordPressRoot::build(&fixture).expect("build");
    let path = root.path();
    assert_eq!(
        std::fs::read(path.join("wp-config.php")).expect("config"),
        std::fs::read(&fixture).expect("fixture")
    );
    let is_link = |rel: &str| {
        std::fs::symlink_metadata(path.join(rel))
            .expect(rel)
            .file_type()
            .is_symlink()
    };
    // PHP's __DIR__ resolves symlinks: these locate wp-load.php and wp-config.php by
    // their own path, so they are real files here.
    for file in [
        "wp-load.php",
        "wp-login.php",
        "index.php",
        "wp-admin/admin.php",
    ] {
        assert!(!is_link(file), "{file} is a copy");
    }
    assert!(is_link("wp-includes"));
    assert!(!is_link("wp-content"), "uploads stay in the test's tree");
    assert!(path.join("wp-content/themes").is_dir());
    assert!(!Path::new(&path.join(".htaccess")).exists());
    let kept = path.to_path_buf();
    drop(root);
    assert!(!kept.exists(), "removed on drop");
}
