//! PHP-FPM test harness.
