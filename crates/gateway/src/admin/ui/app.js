// The gateway's dashboard. Everything it shows comes from the admin API, called with
// `Authorization: Bearer <token>`; the token lives in sessionStorage (this tab only) and
// never in a URL. Data reaches the page only as text nodes and SVG attributes: nothing
// here parses markup.
'use strict';

(() => {
  const TOKEN_KEY = 'gateway-admin-token';
  const REFRESH_MS = 10000;
  const SVG = 'http://www.w3.org/2000/svg';
  const $ = (id) => document.getElementById(id);

  /** The API refused the token (or there is none): back to the login form. */
  class Unauthorized extends Error {}

  let timer = null;

  // ---- API --------------------------------------------------------------------------

  async function api(method, path) {
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (!token) throw new Unauthorized('Not signed in.');
    const response = await fetch(path, {
      method,
      headers: { Authorization: 'Bearer ' + token },
      cache: 'no-store',
      credentials: 'omit',
    });
    if (response.status === 401) throw new Unauthorized('The token was refused.');
    const json = (response.headers.get('content-type') || '').startsWith('application/json');
    const body = json ? await response.json() : await response.text();
    if (!response.ok) {
      const detail = json && body && body.detail ? body.detail : String(response.status);
      throw new Error(method + ' ' + path + ': ' + detail);
    }
    return body;
  }

  const tenantPath = (name) => '/tenants/' + encodeURIComponent(name);

  // ---- DOM helpers: text only -------------------------------------------------------

  /** An element with attributes (set as attributes, never as markup) and children
   *  (nodes, or anything else as a text node). */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value !== undefined && value !== null) node.setAttribute(name, String(value));
    }
    node.append(...children.filter((c) => c !== null && c !== undefined)
      .map((c) => (c instanceof Node ? c : String(c))));
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    node.append(...children);
    return node;
  }

  function badge(text, kind) {
    return el('span', { class: 'badge ' + kind }, text);
  }

  function showProblem(message) {
    const problem = $('problem');
    problem.textContent = message || '';
    problem.hidden = !message;
  }

  const number = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });
  const fmt = (n) => number.format(n);
  const when = (unix) => new Date(unix * 1000).toLocaleString();
  const sum = (values) => values.reduce((a, b) => a + b, 0);
  const bytes = (n) => {
    const units = ['B', 'kB', 'MB', 'GB', 'TB'];
    let unit = 0;
    while (n >= 1000 && unit < units.length - 1) { n /= 1000; unit += 1; }
    return fmt(n) + ' ' + units[unit];
  };

  // ---- Charts -----------------------------------------------------------------------

  /** A sparkline of `values`, with `label` as its tooltip and accessible name. */
  function sparkline(values, label) {
    const width = 120;
    const height = 28;
    const max = Math.max(...values, 0);
    const step = values.length > 1 ? width / (values.length - 1) : width;
    const y = (v) => (max > 0 ? height - 2 - (v / max) * (height - 4) : height - 2);
    const points = values.map((v, i) => fmt2(i * step) + ',' + fmt2(y(v))).join(' ');
    return svg('svg', {
      class: 'spark', width, height, viewBox: '0 0 ' + width + ' ' + height,
      role: 'img', 'aria-label': label,
    }, svg('title', {}, label),
    svg('polyline', { points: values.length > 1 ? points : '0,' + fmt2(y(values[0] || 0)) + ' ' + width + ',' + fmt2(y(values[0] || 0)) }));
  }

  const fmt2 = (n) => (Math.round(n * 100) / 100).toString();

  /** A bar chart of requests per hour over [since, until), errors stacked in red. */
  function hourlyChart(rows, since, until) {
    const byHour = new Map(rows.map((row) => [row.hour, row]));
    const hours = [];
    for (let hour = Math.floor(since / 3600) * 3600; hour < until; hour += 3600) hours.push(hour);
    const width = 760;
    const height = 200;
    const left = 48;
    const bottom = 24;
    const max = Math.max(1, ...hours.map((h) => (byHour.get(h) || {}).requests || 0));
    const barWidth = (width - left) / Math.max(hours.length, 1);
    const scale = (v) => (v / max) * (height - bottom - 8);
    const chart = svg('svg', {
      class: 'chart', width, height, viewBox: '0 0 ' + width + ' ' + height, role: 'img',
      'aria-label': 'Requests per hour',
    });
    chart.append(
      svg('line', { x1: left, y1: height - bottom, x2: width, y2: height - bottom, class: 'axis' }),
      svg('text', { x: left - 6, y: 14, 'text-anchor': 'end' }, String(max)),
      svg('text', { x: left - 6, y: height - bottom, 'text-anchor': 'end' }, '0'),
    );
    if (hours.length > 0) {
      chart.append(
        svg('text', { x: left, y: height - 6 }, when(hours[0])),
        svg('text', { x: width, y: height - 6, 'text-anchor': 'end' }, when(hours[hours.length - 1])),
      );
    }
    hours.forEach((hour, index) => {
      const row = byHour.get(hour);
      if (!row || row.requests === 0) return;
      const x = left + index * barWidth;
      const total = scale(row.requests);
      const errors = scale(row.status_5xx);
      const label = when(hour) + ': ' + row.requests + ' requests, ' +
        fmt(row.fpm_time_us / 1e6) + ' s PHP-FPM, ' + row.status_5xx + ' 5xx';
      chart.append(svg('g', { class: 'bar', 'data-hour': hour },
        svg('title', {}, label),
        svg('rect', { x: fmt2(x + 0.5), y: fmt2(height - bottom - total), width: fmt2(Math.max(barWidth - 1, 1)), height: fmt2(total) }),
        svg('rect', { class: 'errors', x: fmt2(x + 0.5), y: fmt2(height - bottom - errors), width: fmt2(Math.max(barWidth - 1, 1)), height: fmt2(errors) })));
    });
    return chart;
  }

  // ---- Overview ---------------------------------------------------------------------

  function hostCell(tenant) {
    const cell = el('td', { class: 'hosts' });
    for (const host of tenant.hosts) {
      const cert = (tenant.certificates || {})[host];
      const line = el('div', {}, host);
      if (cert) {
        const kind = cert.state === 'valid' ? 'ok' : cert.state === 'failed' ? 'bad' : 'warn';
        const title = cert.not_after ? 'certificate valid until ' + when(cert.not_after)
          : cert.last_error || 'no certificate yet';
        const b = badge('TLS ' + cert.state, kind);
        b.setAttribute('title', title);
        line.append(' ', b);
      }
      cell.append(line);
    }
    return cell;
  }

  function stateBadge(enabled) {
    return enabled ? badge('serving', 'ok') : badge('suspended', 'bad');
  }

  function suspendButton(tenant) {
    const action = tenant.enabled ? 'suspend' : 'resume';
    const button = el('button', {
      type: 'button', 'data-action': action, 'data-tenant': tenant.name,
    }, tenant.enabled ? 'Suspend' : 'Resume');
    button.addEventListener('click', async () => {
      button.disabled = true;
      try {
        await api('POST', tenantPath(tenant.name) + '/' + action);
        showProblem('');
      } catch (err) {
        handle(err);
      }
      refresh();
    });
    return button;
  }

  function renderTenants(tenants, recent) {
    const series = new Map(recent.tenants.map((t) => [t.tenant, t]));
    const seconds = recent.seconds;
    const zeros = seconds.map(() => 0);
    const rows = tenants.map((tenant) => {
      const s = series.get(tenant.name);
      const requests = s ? s.requests : zeros;
      const fpm = s ? s.fpm_time_us : zeros;
      const rates = requests.map((n, i) => n / seconds[i]);
      const busy = fpm.map((us, i) => us / 1e6 / seconds[i]);
      const last = rates.length ? rates[rates.length - 1] : 0;
      const errors5 = s ? sum(s.status_5xx) : 0;
      const errors4 = s ? sum(s.status_4xx) : 0;
      const link = el('a', { href: '#tenant/' + encodeURIComponent(tenant.name) }, tenant.name);
      return el('tr', { 'data-tenant': tenant.name },
        el('th', { scope: 'row' }, link),
        hostCell(tenant),
        el('td', { class: 'state' }, stateBadge(tenant.enabled)),
        el('td', { class: 'rate' },
          sparkline(rates, tenant.name + ': requests per second, per minute'),
          el('span', { class: 'value' }, fmt(last) + '/s')),
        el('td', { class: 'fpm' },
          sparkline(busy, tenant.name + ': PHP-FPM seconds per second, per minute'),
          el('span', { class: 'value' }, fmt(sum(fpm) / 1e6) + ' s')),
        el('td', { class: errors5 > 0 ? 'errors bad' : 'errors' },
          el('span', { title: 'responses with a 5xx status' }, errors5 + ' 5xx'), ' · ',
          el('span', { title: 'responses with a 4xx status' }, errors4 + ' 4xx')),
        el('td', {}, suspendButton(tenant)));
    });
    $('tenants').tBodies[0].replaceChildren(...rows);
  }

  function renderUpstreams(upstreams) {
    const rows = [];
    for (const upstream of upstreams) {
      upstream.servers.forEach((server, index) => {
        rows.push(el('tr', { 'data-upstream': upstream.name },
          el('th', { scope: 'row' }, index === 0 ? upstream.name : ''),
          el('td', {}, index === 0 ? String(upstream.queued) : ''),
          el('td', {}, server.address, server.backup ? ' (backup)' : ''),
          el('td', {}, server.healthy ? badge('up', 'ok') : badge('down', 'bad')),
          el('td', {}, server.in_use + ' / ' + server.max_connections),
          el('td', {}, String(server.idle)),
          el('td', {}, String(server.failures)),
          el('td', {}, server.checks_failed + ' of ' + server.checks)));
      });
    }
    $('upstreams').tBodies[0].replaceChildren(...rows);
  }

  /** Reload counts from the Prometheus text of `/metrics`. */
  function reloadCounts(text) {
    const counts = { success: 0, failure: 0 };
    for (const line of text.split('\n')) {
      const match = /^gateway_config_reloads_total\{result="(success|failure)"\} (\d+)/.exec(line);
      if (match) counts[match[1]] = Number(match[2]);
    }
    return counts;
  }

  function renderReloadStatus(health, metrics) {
    const counts = reloadCounts(metrics);
    const status = $('reload-status');
    const summary = health.tenants + ' tenants · reloads: ' + counts.success + ' applied, ' +
      counts.failure + ' rejected · ';
    status.replaceChildren(summary, health.last_reload_ok
      ? badge('config in service', 'ok')
      : badge('last reload rejected: ' + health.last_reload_error, 'bad'));
  }

  async function refreshOverview() {
    const [list, recent, upstreams, health, metrics] = await Promise.all([
      api('GET', '/tenants'), api('GET', '/usage/recent'), api('GET', '/upstreams'),
      api('GET', '/healthz'), api('GET', '/metrics'),
    ]);
    renderTenants(list.tenants, recent);
    renderUpstreams(upstreams);
    renderReloadStatus(health, metrics);
  }

  // ---- One tenant -------------------------------------------------------------------

  function toLocalInput(unix) {
    const d = new Date(unix * 1000 - new Date(unix * 1000).getTimezoneOffset() * 60000);
    return d.toISOString().slice(0, 16);
  }

  function fromLocalInput(value) {
    const time = new Date(value).getTime();
    return Number.isFinite(time) ? Math.floor(time / 1000) : null;
  }

  function defaultRange() {
    const until = (Math.floor(Date.now() / 3600000) + 1) * 3600;
    $('range-from').value = toLocalInput(until - 24 * 3600);
    $('range-to').value = toLocalInput(until);
  }

  function fact(list, name, ...value) {
    list.append(el('dt', {}, name), el('dd', {}, ...value));
  }

  async function refreshTenant(name) {
    const tenant = await api('GET', tenantPath(name));
    $('tenant-name').textContent = tenant.name;
    $('tenant-state').replaceChildren(stateBadge(tenant.enabled));
    $('tenant-actions').replaceChildren(suspendButton(tenant));
    const facts = el('dl', { id: 'tenant-facts' });
    const hosts = hostCell(tenant);
    fact(facts, 'Hosts', ...hosts.childNodes);
    fact(facts, 'PHP-FPM connections', tenant.max_concurrency === null
      ? 'no cap of its own' : 'at most ' + tenant.max_concurrency);
    fact(facts, 'Upstream', tenant.upstream || '[fastcgi]');
    if (tenant.tls !== undefined) {
      fact(facts, 'TLS', typeof tenant.tls === 'string' ? tenant.tls : 'certificate ' + tenant.tls.cert);
    }
    if (tenant.effective_compression) {
      fact(facts, 'Compression', tenant.effective_compression.join(', ') || 'off');
    }
    $('tenant-facts').replaceWith(facts);
    const params = Object.entries(tenant.params).map(([key, value]) =>
      el('tr', {}, el('th', { scope: 'row' }, key), el('td', { class: 'param' }, value)));
    $('params').tBodies[0].replaceChildren(...params);
    await refreshChart(name);
  }

  async function refreshChart(name) {
    const since = fromLocalInput($('range-from').value);
    const until = fromLocalInput($('range-to').value);
    if (since === null || until === null || until <= since) {
      $('chart').replaceChildren(el('p', { class: 'error' }, 'Choose a range whose end is after its start.'));
      return;
    }
    const query = '?tenant=' + encodeURIComponent(name) + '&since=' + since + '&until=' + until;
    const usage = await api('GET', '/usage/hourly' + query);
    if (usage.hours === null) {
      $('chart').replaceChildren(el('p', { class: 'note' },
        'Usage metering is off: set [usage] database in the config to keep hourly usage.'));
      $('usage-totals').textContent = '';
      return;
    }
    $('chart').replaceChildren(hourlyChart(usage.hours, since, until));
    const total = (key) => sum(usage.hours.map((row) => row[key]));
    $('usage-totals').textContent = 'In this range: ' + total('requests') + ' requests, ' +
      fmt(total('fpm_time_us') / 1e6) + ' s in PHP-FPM, ' + bytes(total('bytes_out')) +
      ' sent, ' + total('status_5xx') + ' 5xx and ' + total('status_4xx') + ' 4xx responses.';
  }

  // ---- Views, session, refresh --------------------------------------------------------

  function currentTenant() {
    const match = /^#tenant\/(.+)$/.exec(location.hash);
    return match ? decodeURIComponent(match[1]) : null;
  }

  function show(view) {
    for (const id of ['login', 'overview', 'tenant']) $(id).hidden = id !== view;
    $('session').hidden = view === 'login';
  }

  /** Forgets the token and every piece of data on the page. */
  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    clearTimeout(timer);
    timer = null;
    for (const id of ['tenants', 'upstreams', 'params']) $(id).tBodies[0].replaceChildren();
    for (const id of ['reload-status', 'tenant-name', 'tenant-state', 'tenant-actions',
      'tenant-facts', 'chart', 'usage-totals', 'updated']) $(id).replaceChildren();
    showProblem('');
    $('login-error').textContent = message || '';
    show('login');
    $('token').focus();
  }

  function handle(err) {
    if (err instanceof Unauthorized) signOut(err.message);
    else showProblem(err.message);
  }

  async function refresh() {
    clearTimeout(timer);
    if (!sessionStorage.getItem(TOKEN_KEY)) {
      signOut('');
      return;
    }
    const tenant = currentTenant();
    try {
      if (tenant === null) {
        show('overview');
        await refreshOverview();
      } else {
        show('tenant');
        await refreshTenant(tenant);
      }
      $('updated').textContent = 'updated ' + new Date().toLocaleTimeString();
      showProblem('');
    } catch (err) {
      handle(err);
    }
    if (sessionStorage.getItem(TOKEN_KEY)) timer = setTimeout(refresh, REFRESH_MS);
  }

  async function signIn(event) {
    event.preventDefault();
    const input = $('token');
    const token = input.value.trim();
    input.value = '';
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    $('login-error').textContent = '';
    try {
      await api('GET', '/healthz');
    } catch (err) {
      signOut(err instanceof Unauthorized ? 'That token was refused.' : err.message);
      return;
    }
    refresh();
  }

  async function reloadConfig() {
    try {
      const result = await api('POST', '/reload');
      showProblem('');
      $('updated').textContent = 'reload: ' + result.outcome;
    } catch (err) {
      handle(err);
    }
    refresh();
  }

  document.addEventListener('DOMContentLoaded', () => {
    $('login-form').addEventListener('submit', signIn);
    $('logout').addEventListener('click', () => signOut(''));
    $('reload').addEventListener('click', reloadConfig);
    $('range').addEventListener('submit', (event) => {
      event.preventDefault();
      const tenant = currentTenant();
      if (tenant !== null) refreshChart(tenant).catch(handle);
    });
    window.addEventListener('hashchange', refresh);
    defaultRange();
    refresh();
  });
})();
