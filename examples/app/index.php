<?php
// Demo front controller: shows which tenant answered and the settings the gateway injected.
// The same code serves every tenant; only the FastCGI params differ.
$keys = ['DBHOST', 'DBNAME', 'DBUSER', 'DBPASS', 'WWWROOT', 'DATAROOT', 'APP_ENV'];
$settings = [];
foreach ($keys as $key) {
    $value = $_SERVER[$key] ?? null;
    // Never echo a password back, even in a demo.
    if ($key === 'DBPASS' && $value !== null) {
        $value = str_repeat('*', 8);
    }
    $settings[$key] = $value;
}
$request = [
    'HTTP_HOST' => $_SERVER['HTTP_HOST'] ?? null,
    'SERVER_NAME' => $_SERVER['SERVER_NAME'] ?? null,
    'REQUEST_URI' => $_SERVER['REQUEST_URI'] ?? null,
    'SCRIPT_NAME' => $_SERVER['SCRIPT_NAME'] ?? null,
    'REMOTE_ADDR' => $_SERVER['REMOTE_ADDR'] ?? null,
];
if (($_GET['format'] ?? '') === 'json' || str_contains($_SERVER['HTTP_ACCEPT'] ?? '', 'application/json')) {
    header('Content-Type: application/json');
    echo json_encode(['tenant' => $settings['DBNAME'], 'settings' => $settings, 'request' => $request], JSON_PRETTY_PRINT), "\n";
    return;
}
$h = fn($v) => htmlspecialchars((string)($v ?? '—'), ENT_QUOTES);
?>
<!DOCTYPE html>
<html>
<head><title>Tenant <?= $h($settings['DBNAME']) ?></title><link rel="stylesheet" href="/assets/style.css"></head>
<body>
<h1>Hello from <?= $h($settings['WWWROOT']) ?></h1>
<p>One PHP codebase, one PHP-FPM pool, many tenants. This request got these settings from the gateway:</p>
<table>
<?php foreach ($settings as $key => $value): ?>
<tr><th><?= $h($key) ?></th><td><?= $h($value) ?></td></tr>
<?php endforeach; ?>
</table>
<h2>Request</h2>
<table>
<?php foreach ($request as $key => $value): ?>
<tr><th><?= $h($key) ?></th><td><?= $h($value) ?></td></tr>
<?php endforeach; ?>
</table>
<p><a href="/?format=json">as JSON</a></p>
</body>
</html>
