//! Test harness: starts real PHP-FPM (and nginx) instances on free ports or
//! sockets, plus helpers (connection-counting relay, free ports, fixtures).
//!
//! Everything but [`eventually`] is synchronous std code so it can be used from plain
//! tests, async tests (from a blocking context) and benchmarks alike. [`prometheus`]
//! reads the gateway's `/metrics` text. A private PostgreSQL ([`Postgres`]) or MariaDB
//! ([`MariaDb`]) and a WordPress document root ([`WordPressRoot`]) serve the end-to-end
//! tests of real applications.
//!
//! ```no_run
//! use fpm_harness::{fixtures_dir, Fpm, FpmConfig, Listen};
//!
//! let fpm = Fpm::start(FpmConfig::new().listen(Listen::Unix).workers(2))?;
//! println!("upstream = {}", fpm.address().to_upstream_string());
//! println!("script   = {}", fixtures_dir().join("hello.php").display());
//! # Ok::<(), fpm_harness::HarnessError>(())
//! ```

mod checksum;
mod database;
mod error;
mod fpm;
mod locate;
mod mariadb;
mod net;
mod nginx;
mod postgres;
mod process;
pub mod prometheus;
mod relay;
mod status;
mod wait;
mod wordpress;

pub use checksum::Crc32;
pub use error::{HarnessError, Result};
pub use fpm::{Fpm, FpmConfig, Listen};
pub use locate::{fixtures_dir, nginx_binary, php_fpm_binary, NGINX_BIN_ENV, PHP_FPM_BIN_ENV};
pub use mariadb::{mariadb_binaries, MariaDb, MariaDbBinaries};
pub use net::{free_port, FpmAddress, Stream};
pub use nginx::Nginx;
pub use postgres::{postgres_bin_dir, Postgres};
pub use relay::CountingRelay;
pub use status::{status_page_params, STATUS_PATH};
pub use wait::eventually;
pub use wordpress::{
    wordpress_config_fixture, wordpress_dir, WordPressRoot, DEBIAN_WORDPRESS_DIR, WORDPRESS_DIR_ENV,
};
