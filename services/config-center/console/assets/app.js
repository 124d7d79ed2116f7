// The Sextant console: a single page over the config-center's API
// (docs/console.md). No framework: the DOM is built with el() below, every
// text goes in as a text node, and the Content-Security-Policy forbids
// inline scripts. The operator's token is kept in sessionStorage and sent as
// Authorization: Bearer on every API call.
'use strict';

(function () {
  const TOKEN_KEY = 'sextant.token';
  const PAGE_SIZE = 100;
  const SAMPLES_KEPT = 900; // the history's points, then fifteen minutes of live samples
  const HISTORY_MINUTES = 15;
  const CHART_LINES = 10;

  // ---------- helpers ----------

  function el(tag, attrs, ...children) {
    const svg = tag.startsWith('svg:');
    const e = svg ? document.createElementNS('http://www.w3.org/2000/svg', tag.slice(4)) : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else if (k === 'text') e.textContent = v;
      else if (k === 'value' && !svg) e.value = v;
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  const fmt = {
    num(v, digits) {
      if (v === undefined || v === null || Number.isNaN(v)) return '–';
      return Number(v).toLocaleString('en-US', { maximumFractionDigits: digits === undefined ? 1 : digits });
    },
    pct(v, digits) {
      if (v === undefined || v === null) return '–';
      return (v * 100).toLocaleString('en-US', { maximumFractionDigits: digits === undefined ? 2 : digits }) + ' %';
    },
    ms(v) { return v === undefined || v === null ? '–' : fmt.num(v, 1) + ' ms'; },
    time(ms) { return ms ? new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '–'; },
  };

  function token() { return sessionStorage.getItem(TOKEN_KEY) || ''; }

  class APIError extends Error {
    constructor(status, code, message, field) {
      super(message);
      this.status = status; this.code = code; this.field = field;
    }
  }

  let loginMessage = '';
  let returnTo = ''; // the page to show once logged in

  // api calls the config-center; it resolves to {data, etag} and rejects
  // with an APIError carrying the API's {code, message, field}.
  async function api(method, path, opts) {
    opts = opts || {};
    const headers = Object.assign({ Authorization: 'Bearer ' + token() }, opts.headers || {});
    if (opts.body !== undefined) headers['Content-Type'] = 'application/json';
    let r;
    try {
      r = await fetch(path, { method, headers, body: opts.body, cache: 'no-store' });
    } catch (e) {
      throw new APIError(0, 'unreachable', 'the config-center did not answer: ' + e.message, '');
    }
    const text = await r.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
    if (!r.ok) {
      const e = (data && data.error) || {};
      const err = new APIError(r.status, e.code || String(r.status), e.message || text || r.statusText, e.field || '');
      if (r.status === 401) {
        sessionStorage.removeItem(TOKEN_KEY);
        loginMessage = 'The config-center refused the token (' + err.message + '). Log in again.';
        if (!location.hash.startsWith('#/login')) returnTo = location.hash;
        location.hash = '#/login';
      }
      throw err;
    }
    return { data, etag: r.headers.get('ETag'), status: r.status };
  }

  // errorBox shows an API error clearly; a 403 says the token may not do it.
  function errorBox(err, what) {
    const box = el('div', { class: 'error', role: 'alert' });
    if (err instanceof APIError && err.status === 403) {
      box.append(el('span', { class: 'code', text: 'Not allowed (403): ' }),
        (what ? what + ': ' : '') + err.message + '. Your token does not have the role this needs; ask an operator with the writer role for this service.');
    } else if (err instanceof APIError) {
      box.append(el('span', { class: 'code', text: (err.status ? err.status + ' ' : '') + err.code + (err.field ? ' on ' + err.field : '') + ': ' }),
        (what ? what + ': ' : '') + err.message);
    } else {
      box.append(String(err && err.message || err));
    }
    return box;
  }

  function enc(s) { return encodeURIComponent(s); }
  function encScope(scope) { return scope.split('/').map(enc).join('/'); }
  function configPath(kind, scope) { return '/v1/configs/' + enc(kind) + '/' + encScope(scope); }
  function pretty(doc) { return doc === undefined || doc === null ? '' : JSON.stringify(doc, null, 2); }

  // ---------- routing ----------

  const app = document.getElementById('app');
  let cleanups = [];

  function parseHash() {
    const h = location.hash.replace(/^#/, '') || '/';
    const [path, query] = h.split('?');
    const params = new URLSearchParams(query || '');
    const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
    return { parts, params };
  }

  function setActive(page) {
    for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.page === page);
  }

  function render() {
    for (const f of cleanups) f();
    cleanups = [];
    const { parts, params } = parseHash();
    if (!token() && parts[0] !== 'login') {
      returnTo = location.hash;
      location.hash = '#/login';
      return;
    }
    document.getElementById('top').hidden = parts[0] === 'login';
    app.replaceChildren();
    const page = parts[0] || 'overview';
    setActive(page === 'service' ? 'overview' : page === 'config' ? 'configs' : page);
    switch (page) {
      case 'login': return loginPage();
      case 'overview': return overviewPage(params);
      case 'service': return servicePage(parts.slice(1).join('/'));
      case 'configs': return configsPage(params);
      case 'config': return editorPage(parts[1], parts.slice(2).join('/'));
      case 'access': return accessPage(params);
      case 'audit': return auditPage(params);
      default:
        app.append(el('h1', { text: 'Not found' }), el('p', {}, el('a', { href: '#/', text: 'Overview' })));
    }
  }

  window.addEventListener('hashchange', render);
  document.getElementById('logout').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    returnTo = '';
    loginMessage = 'Logged out.';
    location.hash = '#/login';
  });

  // ---------- login ----------

  function loginPage() {
    const input = el('input', { type: 'password', id: 'token', autocomplete: 'off', placeholder: 'bearer token' });
    const status = el('div');
    if (loginMessage) status.append(el('div', { class: 'warnbox', text: loginMessage }));
    const form = el('form', { class: 'card login', id: 'login-form' },
      el('h1', { text: 'Sextant console' }),
      el('p', { class: 'muted', text: 'Paste an operator token: the admin token `sextant dev` prints, or a reader or writer token. It is kept in this tab only (sessionStorage) and sent to the config-center with every call.' }),
      input, el('button', { type: 'submit', id: 'login-button', text: 'Log in' }), status);
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const t = input.value.trim();
      if (!t) return;
      sessionStorage.setItem(TOKEN_KEY, t);
      loginMessage = '';
      // Check the token against the API before going on.
      try {
        await api('GET', '/v1/kinds');
      } catch (err) {
        status.replaceChildren(errorBox(err, 'token check'));
        if (err.status === 401) {
          sessionStorage.removeItem(TOKEN_KEY);
          input.value = '';
          input.focus();
          return;
        }
      }
      const to = returnTo || '#/';
      returnTo = '';
      location.hash = to;
    });
    app.append(form);
    input.focus();
  }

  // ---------- overview ----------

  function health(s) {
    const state = s.overload && s.overload.state;
    if (!s.instances) return 'no instances';
    if (s.ejected >= s.instances || s.error_ratio >= 0.05) return 'critical';
    if (s.ejected > 0 || s.error_ratio >= 0.01 || (state && state !== 'normal')) return 'degraded';
    return 'healthy';
  }

  let keepSearchFocus = false;

  function overviewPage(params) {
    const search = params.get('search') || '';
    const sort = params.get('sort') || 'trouble';
    const offset = Math.max(0, parseInt(params.get('offset') || '0', 10) || 0);
    const go = (p) => {
      const q = new URLSearchParams({ search: p.search !== undefined ? p.search : search, sort: p.sort || sort, offset: String(p.offset !== undefined ? p.offset : offset) });
      location.hash = '#/?' + q.toString();
    };
    const box = el('input', { type: 'search', id: 'search', placeholder: 'search services', value: search });
    let timer = null;
    box.addEventListener('input', () => {
      clearTimeout(timer);
      timer = setTimeout(() => { keepSearchFocus = true; go({ search: box.value.trim(), offset: 0 }); }, 300);
    });
    cleanups.push(() => clearTimeout(timer));
    const sortSel = el('select', { id: 'sort', onchange: (e) => go({ sort: e.target.value, offset: 0 }) },
      el('option', { value: 'trouble', text: 'most trouble first' }), el('option', { value: 'name', text: 'by name' }));
    sortSel.value = sort;
    const body = el('div', {}, el('p', { class: 'muted', text: 'Loading services…' }));
    app.append(el('h1', { text: 'Services' }),
      el('div', { class: 'row' }, box, sortSel, el('button', { type: 'button', class: 'secondary', id: 'refresh', text: 'Refresh', onclick: render })),
      body);
    if (keepSearchFocus) { // the page was redrawn for what is being typed
      keepSearchFocus = false;
      box.focus();
      box.setSelectionRange(box.value.length, box.value.length);
    }
    const q = new URLSearchParams({ search, offset: String(offset), limit: String(PAGE_SIZE), sort });
    api('GET', '/v1/services?' + q.toString()).then(({ data }) => {
      const rows = (data.services || []).map((s) => {
        const h = health(s);
        const state = (s.overload && s.overload.state) || 'normal';
        return el('tr', { 'data-service': s.service },
          el('td', {}, el('a', { href: '#/service/' + enc(s.service), class: 'service-link', text: s.service })),
          el('td', {}, el('span', { class: 'badge ' + h, text: h })),
          el('td', { text: s.shard || '–' }),
          el('td', { class: 'num', text: fmt.num(s.instances, 0) }),
          el('td', { class: 'num', text: fmt.num(s.ejected, 0) }),
          el('td', { class: 'num', text: s.weight_min === s.weight_max ? fmt.num(s.weight_max, 0) : fmt.num(s.weight_min, 0) + '–' + fmt.num(s.weight_max, 0) }),
          el('td', { class: 'num', text: fmt.num(s.requests_per_s, 1) }),
          el('td', { class: 'num', text: fmt.pct(s.error_ratio) }),
          el('td', { class: 'num', text: fmt.ms(s.latency_ms) }),
          el('td', {}, el('span', { class: 'badge ' + state, text: state }),
            s.overload && s.overload.shed_target ? ' shed ' + fmt.pct(s.overload.shed_target, 1) : ''));
      });
      const total = data.total || 0;
      const first = total ? data.offset + 1 : 0;
      const last = data.offset + (data.services || []).length;
      const pager = el('div', { class: 'row pager' },
        el('button', { type: 'button', class: 'secondary', id: 'prev', disabled: offset === 0, text: '← Previous', onclick: () => go({ offset: Math.max(0, offset - PAGE_SIZE) }) }),
        el('span', { id: 'range', text: `${fmt.num(first, 0)}–${fmt.num(last, 0)} of ${fmt.num(total, 0)} services` }),
        el('button', { type: 'button', class: 'secondary', id: 'next', disabled: last >= total, text: 'Next →', onclick: () => go({ offset: offset + PAGE_SIZE }) }));
      body.replaceChildren(
        data.partial ? el('div', { class: 'warnbox', text: 'Partial answer: some weight-calculator shards did not answer; their services are missing.' }) : '',
        pager,
        el('table', { id: 'services' },
          el('thead', {}, el('tr', {}, ['Service', 'Health', 'Shard', 'Instances', 'Ejected', 'Weights', 'Requests/s', 'Errors', 'Latency', 'Overload'].map((h, i) =>
            el('th', { class: i >= 3 && i <= 8 ? 'num' : '', text: h })))),
          el('tbody', {}, rows.length ? rows : el('tr', {}, el('td', { colspan: 10, class: 'muted', text: search ? 'No service matches.' : 'No service has telemetry yet.' })))));
    }).catch((err) => body.replaceChildren(errorBox(err, 'services')));
  }

  // ---------- service ----------

  const palette = ['#2456c7', '#d9480f', '#2b8a3e', '#862e9c', '#c92a2a', '#1098ad', '#e67700', '#5c940d', '#364fc7', '#a61e4d'];

  function ago(ms) {
    const s = Math.round(ms / 1000);
    return s > 120 ? '-' + Math.round(s / 60) + ' min' : '-' + s + ' s';
  }

  // chart draws series ([{name, points: [[t, v], ...]}]) as lines in an SVG.
  function chart(id, title, series, unit, fixedMax) {
    const W = 560, H = 170, L = 48, R = 8, T = 10, B = 22;
    const svg = el('svg:svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': title });
    let tmin = Infinity, tmax = -Infinity, vmax = fixedMax || 0;
    for (const s of series) for (const [t, v] of s.points) {
      tmin = Math.min(tmin, t); tmax = Math.max(tmax, t);
      if (!fixedMax) vmax = Math.max(vmax, v);
    }
    if (!vmax) vmax = 1;
    if (!(tmax > tmin)) { tmin = tmax - 1000; }
    const x = (t) => L + (t - tmin) / (tmax - tmin) * (W - L - R);
    const y = (v) => T + (1 - v / vmax) * (H - T - B);
    svg.append(el('svg:line', { x1: L, y1: y(0), x2: W - R, y2: y(0), stroke: '#d9dee7' }),
      el('svg:line', { x1: L, y1: y(vmax), x2: W - R, y2: y(vmax), stroke: '#eef1f6' }),
      el('svg:line', { x1: L, y1: y(vmax / 2), x2: W - R, y2: y(vmax / 2), stroke: '#eef1f6' }),
      el('svg:text', { x: L - 4, y: y(vmax) + 4, 'text-anchor': 'end', 'font-size': 10, fill: '#667085', text: fmt.num(vmax, 2) + unit }),
      el('svg:text', { x: L - 4, y: y(vmax / 2) + 4, 'text-anchor': 'end', 'font-size': 10, fill: '#667085', text: fmt.num(vmax / 2, 2) + unit }),
      el('svg:text', { x: L - 4, y: y(0) + 4, 'text-anchor': 'end', 'font-size': 10, fill: '#667085', text: '0' }),
      el('svg:text', { x: W - R, y: H - 6, 'text-anchor': 'end', 'font-size': 10, fill: '#667085', text: 'now' }),
      el('svg:text', { x: L, y: H - 6, 'font-size': 10, fill: '#667085', text: series.length && isFinite(tmin) ? ago(tmax - tmin) : '' }));
    series.forEach((s, i) => {
      const color = palette[i % palette.length];
      if (s.points.length === 1) {
        const [t, v] = s.points[0];
        svg.append(el('svg:circle', { cx: x(t), cy: y(v), r: 2.5, fill: color }));
      } else if (s.points.length > 1) {
        svg.append(el('svg:polyline', { fill: 'none', stroke: color, 'stroke-width': 1.6,
          points: s.points.map(([t, v]) => x(t).toFixed(1) + ',' + y(v).toFixed(1)).join(' ') }));
      }
    });
    const legend = el('div', { class: 'legend' }, series.map((s, i) => el('span', {},
      el('svg:svg', { viewBox: '0 0 10 10' }, el('svg:rect', { width: 10, height: 10, fill: palette[i % palette.length] })), s.name)));
    return el('div', { class: 'card chart', id }, el('h2', { text: title }), svg, legend);
  }

  function servicePage(service) {
    const samples = [];
    const head = el('div', {});
    const overload = el('div', { class: 'card', id: 'overload' });
    const instances = el('div', { class: 'card', id: 'instances' }, el('p', { class: 'muted', text: 'Loading the live policy…' }));
    const charts = el('div', { class: 'charts', id: 'charts' });
    const configs = el('div', { class: 'card', id: 'service-configs' });
    const planes = el('div', { class: 'card', id: 'dataplanes' });
    app.append(el('h1', {}, 'Service ', el('span', { id: 'service-name', text: service })), head,
      el('p', { class: 'row' },
        el('a', { href: '#/configs?service=' + enc(service), text: 'Configs of ' + service }),
        el('a', { href: '#/access?service=' + enc(service), text: 'Access dry-run report' })),
      overload, instances, el('h2', {}, 'Over time ', el('span', { class: 'muted', id: 'chart-source', text: '(sampled every second while this page is open)' })), charts, configs, planes);
    let last = null;
    // The history from InfluxDB, when the config-center has it, goes before
    // the live samples.
    api('GET', '/v1/services/' + enc(service) + '/history?minutes=' + HISTORY_MINUTES).then(({ data }) => {
      const byT = new Map();
      const at = (t) => {
        if (!byT.has(t)) byT.set(t, { t, history: true, data: { instances: [], overload: {} } });
        return byT.get(t);
      };
      for (const [inst, points] of Object.entries(data.instances || {})) {
        for (const [t, w, l] of points) at(t).data.instances.push({ instance: inst, weight: w, latency_ms: l });
      }
      for (const [t, shed] of data.shed || []) at(t).data.overload.shed_target = shed;
      const first = samples.length ? samples[0].t : Infinity;
      samples.unshift(...[...byT.values()].filter((x) => x.t < first).sort((a, b) => a.t - b.t));
      document.getElementById('chart-source').textContent = `(the last ${HISTORY_MINUTES} minutes from InfluxDB, then sampled every second while this page is open)`;
      if (last) draw(last);
    }).catch((err) => {
      const why = err.code === 'no_time_series' ? 'no InfluxDB configured: ' : 'no history (' + err.message + '): ';
      const src = document.getElementById('chart-source');
      if (src) src.textContent = '(' + why + 'sampled every second while this page is open)';
    });

    let stopped = false;
    let timer = null;
    cleanups.push(() => { stopped = true; clearTimeout(timer); });

    async function sample() {
      try {
        const { data } = await api('GET', '/v1/services/' + enc(service));
        if (stopped) return;
        samples.push({ t: Date.now(), data });
        if (samples.length > SAMPLES_KEPT) samples.shift();
        last = data;
        draw(data);
      } catch (err) {
        if (stopped) return;
        if (err.status === 404) {
          instances.replaceChildren(el('div', { class: 'warnbox', id: 'not-computed' },
            'No weight-calculator computes ' + service + ' now: it has no telemetry in the current windows (or the name is wrong). This page keeps asking every second.'));
        } else {
          instances.replaceChildren(errorBox(err, 'live policy'));
        }
        if (err.status === 401) return;
      }
      if (!stopped) timer = setTimeout(sample, 1000);
    }

    function draw(d) {
      head.replaceChildren(el('p', { class: 'muted', id: 'service-meta' },
        `shard ${d.shard || '–'} · policy computed at ${fmt.time(d.round_at_ms)} · ${samples.filter((x) => !x.history).length} sample(s)`));
      const o = d.overload || {};
      const state = o.state || 'normal';
      overload.replaceChildren(el('h2', {}, 'Overload ', el('span', { class: 'badge ' + state, id: 'overload-state', text: state })),
        el('dl', { class: 'kv' },
          el('dt', { text: 'shed target' }), el('dd', { text: fmt.pct(o.shed_target, 1) }),
          el('dt', { text: 'admits priority ≥' }), el('dd', { text: fmt.num(o.admit_min_priority, 0) + ' (level ' + fmt.num(o.admit_min_level, 0) + ')' }),
          el('dt', { text: 'queue time' }), el('dd', { text: fmt.ms(o.queue_time_ms) }),
          el('dt', { text: 'CPU' }), el('dd', { text: fmt.pct(o.cpu, 1) }),
          el('dt', { text: 'timeouts' }), el('dd', { text: fmt.pct(o.timeout_ratio) }),
          el('dt', { text: 'why' }), el('dd', { text: o.reason || '–' })));
      const list = d.instances || [];
      const rows = list.map((i) => el('tr', { 'data-instance': i.instance },
        el('td', { text: i.instance }),
        el('td', { class: 'num weight', text: fmt.num(i.weight, 0) }),
        el('td', {}, el('span', { class: 'bar-wrap' }, el('svg:svg', { viewBox: '0 0 100 8', width: 80, height: 8, preserveAspectRatio: 'none' },
          el('svg:rect', { width: Math.max(0, Math.min(100, (i.share || 0) * 100)), height: 8, fill: '#2456c7' }))), fmt.pct(i.share, 1)),
        el('td', {}, i.ejected ? el('span', { class: 'badge ejected', text: 'ejected' }) : el('span', { class: 'badge healthy', text: 'serving' })),
        el('td', { class: 'reason', text: i.reason || '–' }),
        el('td', { class: 'num', text: fmt.num(i.qps, 1) }),
        el('td', { class: 'num', text: fmt.pct(i.utilization, 0) }),
        el('td', { class: 'num', text: fmt.pct(i.error_rate) }),
        el('td', { class: 'num', text: fmt.ms(i.latency_ms) })));
      instances.replaceChildren(el('h2', { text: `Instances (${list.length})` }),
        el('table', { id: 'instance-table' },
          el('thead', {}, el('tr', {}, ['Instance', 'Weight', 'Share of traffic', 'State', 'Why', 'Requests/s', 'Utilization', 'Errors', 'Latency'].map((h, i) =>
            el('th', { class: i === 1 || i >= 5 ? 'num' : '', text: h })))),
          el('tbody', {}, rows.length ? rows : el('tr', {}, el('td', { colspan: 9, class: 'muted', text: 'No instances in the policy.' })))));
      // One pass over the samples; the charts draw the CHART_LINES
      // instances with the lowest weights now (the ones to look at).
      const series = new Map();
      for (const smp of samples) {
        for (const i of smp.data.instances || []) {
          if (!series.has(i.instance)) series.set(i.instance, { weight: [], latency_ms: [] });
          const sr = series.get(i.instance);
          if (typeof i.weight === 'number') sr.weight.push([smp.t, i.weight]);
          if (typeof i.latency_ms === 'number') sr.latency_ms.push([smp.t, i.latency_ms]);
        }
      }
      const names = list.slice().sort((a, b) => a.weight - b.weight || (a.instance < b.instance ? -1 : 1))
        .slice(0, CHART_LINES).map((i) => i.instance).sort();
      const per = (field) => names.filter((n) => series.has(n)).map((n) => ({ name: n, points: series.get(n)[field] }));
      const note = list.length > CHART_LINES ? ` (the ${CHART_LINES} lowest weights of ${list.length} instances)` : '';
      charts.replaceChildren(
        chart('chart-weights', 'Weights' + note, per('weight'), ''),
        chart('chart-latency', 'Latency' + note, per('latency_ms'), ' ms'),
        chart('chart-shed', 'Shed share', [{ name: 'shed target', points: samples.map((s) => [s.t, ((s.data.overload || {}).shed_target || 0) * 100]) }], ' %', 0));
    }

    sample();
    // Which config versions its data planes run (like istioctl proxy-status).
    api('GET', '/v1/dataplanes?service=' + enc(service)).then(({ data }) => {
      const list = data.dataplanes || [];
      const revs = (m) => Object.entries(m || {}).map(([k, r]) => k + ' @' + r).join(', ') || '–';
      const state = { SYNCED: 'healthy', STALE: 'degraded', 'NOT SENT': 'critical' };
      planes.replaceChildren(el('h2', { text: 'Data planes and their config versions' }),
        list.length ? el('table', { id: 'dataplane-table' },
          el('thead', {}, el('tr', {}, ['Instance', 'State', 'In force', 'Sent', 'Applied', 'Last seen'].map((h) => el('th', { text: h })))),
          el('tbody', {}, list.map((d) => el('tr', { 'data-instance': d.instance },
            el('td', { text: d.instance }),
            el('td', {}, el('span', { class: 'badge ' + (state[d.state] || ''), text: d.state })),
            el('td', { text: revs(d.current) }), el('td', { text: revs(d.sent) }), el('td', { text: revs(d.applied) }),
            el('td', { text: fmt.time(d.last_seen_ms) })))))
          : el('p', { class: 'muted', text: 'No instance of ' + service + ' watches its configs on this config-center replica.' }));
    }).catch((err) => planes.replaceChildren(errorBox(err, 'data planes')));
    api('GET', '/v1/configs?service=' + enc(service)).then(({ data }) => {
      configs.replaceChildren(el('h2', { text: 'Configs naming ' + service }), configTable(data.configs || []), pinTable(service, data.pins || [], () => render()));
    }).catch((err) => configs.replaceChildren(errorBox(err, 'configs')));
  }

  // ---------- configs ----------

  // kinds are the kinds the config-center serves (GET /v1/kinds): name,
  // scope, and the defaults of the knobs kinds.
  let kindsCache = null;
  async function kinds() {
    if (!kindsCache) kindsCache = (await api('GET', '/v1/kinds')).data.kinds || [];
    return kindsCache;
  }

  function configTable(list) {
    if (!list.length) return el('p', { class: 'muted', text: 'No config names this service.' });
    return el('table', { id: 'config-table' },
      el('thead', {}, el('tr', {}, ['Kind', 'Scope', 'Revision', 'Rollout', 'Updated by', 'Updated at'].map((h) => el('th', { text: h })))),
      el('tbody', {}, list.map((c) => el('tr', {},
        el('td', {}, el('a', { href: '#/config/' + enc(c.kind) + '/' + encScope(c.scope), class: 'config-link', text: c.kind })),
        el('td', { text: c.scope }),
        el('td', { text: c.revision }),
        el('td', { text: c.rollout ? c.rollout.percent + ' %' : '–' }),
        el('td', { text: c.updated_by || '–' }),
        el('td', { text: fmt.time(c.updated_at_ms) })))));
  }

  function pinTable(service, pins, after) {
    const out = el('div', { id: 'pins' }, el('h2', { text: 'Pins of ' + service }));
    if (!pins.length) { out.append(el('p', { class: 'muted', text: 'None: ' + service + '\'s instances follow the current versions and rollouts.' })); return out; }
    const status = el('div');
    out.append(el('table', {},
      el('thead', {}, el('tr', {}, ['Kind', 'Scope', 'Pinned revision', 'By', 'At', ''].map((h) => el('th', { text: h })))),
      el('tbody', {}, pins.map((p) => el('tr', {},
        el('td', { text: p.kind }), el('td', { text: p.scope }), el('td', { text: p.revision }),
        el('td', { text: p.pinned_by || '–' }), el('td', { text: fmt.time(p.at_ms) }),
        el('td', {}, el('button', { type: 'button', class: 'secondary unpin', text: 'Unpin', onclick: async () => {
          try {
            await api('DELETE', '/v1/pins/' + enc(service) + '?kind=' + enc(p.kind) + '&scope=' + enc(p.scope));
            after();
          } catch (err) { status.replaceChildren(errorBox(err, 'unpin')); }
        } })))))), status);
    return out;
  }

  async function configsPage(params) {
    const service = params.get('service') || '';
    const input = el('input', { type: 'text', id: 'config-service', placeholder: 'service', value: service });
    const form = el('form', { class: 'row' }, input, el('button', { type: 'submit', text: 'Show' }));
    form.addEventListener('submit', (e) => { e.preventDefault(); location.hash = '#/configs?service=' + enc(input.value.trim()); });
    const list = el('div', { class: 'card' });
    const create = el('div', { class: 'card', id: 'new-config' });
    app.append(el('h1', { text: 'Governance config' }), form, list, create);
    if (!service) list.append(el('p', { class: 'muted', text: 'Name a service to see every config naming it (as server or client) and its pins.' }));
    else {
      list.append(el('p', { class: 'muted', text: 'Loading…' }));
      api('GET', '/v1/configs?service=' + enc(service)).then(({ data }) => {
        list.replaceChildren(el('h2', { text: 'Configs naming ' + service }), configTable(data.configs || []), pinTable(service, data.pins || [], render));
      }).catch((err) => list.replaceChildren(errorBox(err, 'configs')));
    }
    let ks;
    try { ks = await kinds(); } catch (err) { create.append(errorBox(err, 'kinds')); return; }
    const kindSel = el('select', { id: 'new-kind' }, ks.map((k) => el('option', { value: k.kind, text: k.kind + (k.scope === 'client' ? ' (client/server)' : ' (server)') })));
    const client = el('input', { type: 'text', id: 'new-client', placeholder: 'client service' });
    const server = el('input', { type: 'text', id: 'new-server', placeholder: 'server service', value: service });
    const sync = () => { client.hidden = (ks.find((k) => k.kind === kindSel.value) || {}).scope !== 'client'; };
    kindSel.addEventListener('change', sync);
    sync();
    const f = el('form', { class: 'row' }, kindSel, client, server, el('button', { type: 'submit', id: 'open-editor', text: 'Open editor' }));
    f.addEventListener('submit', (e) => {
      e.preventDefault();
      const scope = client.hidden ? server.value.trim() : client.value.trim() + '/' + server.value.trim();
      location.hash = '#/config/' + enc(kindSel.value) + '/' + encScope(scope);
    });
    create.append(el('h2', { text: 'Edit or create a config' }),
      el('p', { class: 'muted', text: 'Every kind the config-center serves. Client-scoped kinds are per caller and callee; the others per server.' }), f);
    const listed = el('div', { id: 'all-configs' });
    create.append(el('h2', { text: 'Every config' }), el('p', { class: 'row' },
      el('button', { type: 'button', class: 'secondary', id: 'list-all', text: 'List every config of the mesh', onclick: async () => {
        try {
          const { data } = await api('GET', '/v1/configs');
          listed.replaceChildren(configTable(data.configs || []));
        } catch (err) { listed.replaceChildren(errorBox(err, 'configs')); }
      } })), listed);
  }

  // Templates for a config that does not exist yet (docs/config-center.md).
  const templates = {
    rpc_timeout: { '*': { rpc_timeout_ms: 800, conn_timeout_ms: 50 } },
    retry: { '*': { enable: true, type: 0, failure_policy: { stop_policy: { max_retry_times: 2 } } } },
    circuit_break: { '*': { enable: true, err_rate: 0.3, min_sample: 100 } },
    degradation: { enable: false, percentage: 0 },
    limit: { connection_limit: 1000, qps_limit: 5000 },
    access_control: { rules: [] },
    unit_routing: { rules: [] },
    priority_rules: { default: 64, rules: [] },
    overload: {},
    calculator: {},
  };

  // diffLines is a line diff (longest common subsequence) of a and b.
  function diffLines(a, b) {
    const x = a ? a.split('\n') : [], y = b ? b.split('\n') : [];
    const n = x.length, m = y.length;
    if (n * m > 4e6) { // too large to align: show both whole
      return x.map((l) => ['-', l]).concat(y.map((l) => ['+', l]));
    }
    const L = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
    for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--)
      L[i][j] = x[i] === y[j] ? L[i + 1][j + 1] + 1 : Math.max(L[i + 1][j], L[i][j + 1]);
    const out = [];
    let i = 0, j = 0;
    while (i < n && j < m) {
      if (x[i] === y[j]) { out.push([' ', x[i]]); i++; j++; }
      else if (L[i + 1][j] >= L[i][j + 1]) out.push(['-', x[i++]]);
      else out.push(['+', y[j++]]);
    }
    while (i < n) out.push(['-', x[i++]]);
    while (j < m) out.push(['+', y[j++]]);
    return out;
  }

  function diffView(ops) {
    const cls = { '+': 'add', '-': 'del', ' ': 'same' };
    return el('div', { class: 'diff', id: 'diff-lines' }, ops.map(([op, line]) => el('div', { class: cls[op] }, op + ' ' + line)));
  }

  function editorPage(kind, scope) {
    const state = { entry: null, etag: null, exists: false };
    const title = el('h1', {}, el('span', { id: 'editor-kind', text: kind }), ' / ', el('span', { id: 'editor-scope', text: scope }));
    const meta = el('div', { class: 'muted', id: 'editor-meta' });
    const banner = el('div', { id: 'banner' });
    const editor = el('textarea', { id: 'editor', spellcheck: 'false', autocomplete: 'off' });
    const validation = el('div', { id: 'validation' });
    const diffBox = el('div', { id: 'diff' });
    const rollout = el('input', { type: 'range', id: 'rollout', min: 0, max: 99, step: 1, value: 0 });
    const rolloutLabel = el('span', { id: 'rollout-label' });
    const showRollout = () => {
      const p = Number(rollout.value);
      rolloutLabel.textContent = p === 0 ? 'to every instance' : `to ${p} % of the instances (a rollout)`;
    };
    rollout.addEventListener('input', showRollout);
    showRollout();
    const reviewBtn = el('button', { type: 'button', id: 'review', text: 'Review changes' });
    const saveBtn = el('button', { type: 'button', id: 'save', text: 'Save', disabled: true });
    // Delete asks twice: the first click arms it.
    const deleteBtn = el('button', { type: 'button', class: 'danger', id: 'delete', text: 'Delete' });
    deleteBtn.addEventListener('click', async () => {
      if (!state.exists) return;
      if (!deleteBtn.dataset.armed) {
        deleteBtn.dataset.armed = '1';
        deleteBtn.textContent = `Click again to delete revision ${state.entry.revision}`;
        return;
      }
      try {
        await api('DELETE', configPath(kind, scope), { headers: { 'If-Match': state.etag || String(state.entry.revision) } });
        await load();
        flash('Deleted: data planes go back to their defaults for this config.');
      } catch (err) { banner.replaceChildren(errorBox(err, 'delete')); }
    });
    const rolloutBox = el('div', { id: 'rollout-box' });
    const statusBox = el('div', { id: 'status-box' });
    const history = el('div', { class: 'card', id: 'history' });
    const pinBox = el('div', { class: 'card', id: 'pin-box' });
    // The service whose instances apply the config: the client of a
    // client-scoped one, else the server.
    const applier = scope.split('/')[0];
    const defaultsBox = el('div', { class: 'card', id: 'defaults', hidden: true });
    kinds().then((ks) => {
      const k = ks.find((x) => x.kind === kind);
      if (!k) {
        banner.replaceChildren(el('div', { class: 'error', role: 'alert', text: `The config-center serves no kind ${kind}: ` + ks.map((x) => x.kind).join(', ') }));
      } else if (k.defaults) {
        defaultsBox.hidden = false;
        defaultsBox.append(el('h2', { text: 'Defaults' }),
          el('p', { class: 'muted', text: 'A field the document leaves out keeps its default:' }), el('pre', { text: pretty(k.defaults) }));
      }
    }).catch(() => {});

    app.append(title, meta, banner,
      el('div', { class: 'grid2' },
        el('div', { class: 'card' }, el('h2', { text: 'Document' }), editor,
          el('div', { class: 'row' }, el('label', { class: 'slider' }, 'Save', rollout, rolloutLabel)),
          el('div', { class: 'row' }, reviewBtn, saveBtn, deleteBtn)),
        el('div', {},
          el('div', { class: 'card' }, el('h2', { text: 'Validation' }), validation),
          defaultsBox,
          el('div', { class: 'card' }, el('h2', { text: 'Changes against the current version' }), diffBox),
          el('div', { class: 'card' }, el('h2', { text: 'Rollout' }), rolloutBox, statusBox))),
      history, pinBox);

    editor.addEventListener('input', () => { saveBtn.disabled = true; diffBox.replaceChildren(el('p', { class: 'muted', text: 'Edited: review the changes before saving.' })); });

    function currentText() { return state.exists ? pretty(state.entry.document) : ''; }

    function setValidation(content) {
      editor.classList.toggle('invalid', !!content);
      validation.replaceChildren(content || el('p', { class: 'muted ok', id: 'validation-ok', text: 'Review changes asks the config-center to validate the document (nothing is written).' }));
    }

    // review checks the document (JSON here, then the config-center's
    // validation, which writes nothing) and shows the diff; Save sends it.
    async function review() {
      let doc;
      try {
        doc = JSON.parse(editor.value);
      } catch (e) {
        setValidation(el('div', { class: 'error', role: 'alert', id: 'validation-error' }, el('span', { class: 'code', text: 'not JSON: ' }), e.message));
        saveBtn.disabled = true;
        return null;
      }
      try {
        await api('PUT', configPath(kind, scope) + '?validate=true', { body: JSON.stringify(doc) });
      } catch (err) {
        saveBtn.disabled = true;
        if (err.status === 400) {
          showInvalid(err);
          diffBox.replaceChildren(el('p', { class: 'muted', text: 'Fix the document first.' }));
        } else {
          banner.replaceChildren(errorBox(err, 'validation'));
        }
        return null;
      }
      setValidation(null); // a former error was about another document
      const next = pretty(doc);
      const ops = diffLines(currentText(), next);
      const changed = ops.some(([op]) => op !== ' ');
      diffBox.replaceChildren(
        el('p', { class: 'muted', text: state.exists ? `revision ${state.entry.revision} → new version` : 'a new config' }),
        changed ? diffView(ops) : el('p', { id: 'no-changes', text: 'No changes against the current version.' }));
      saveBtn.disabled = !changed && Number(rollout.value) === 0;
      return doc;
    }
    reviewBtn.addEventListener('click', () => { review(); });

    function showInvalid(err) {
      setValidation(el('div', { class: 'error', role: 'alert', id: 'validation-error' },
        el('div', {}, el('span', { class: 'code', text: 'field ' }), el('code', { id: 'validation-field', text: err.field || '(document)' })),
        el('div', {}, el('span', { class: 'code', text: err.code + ': ' }), err.message)));
    }

    saveBtn.addEventListener('click', async () => {
      const doc = await review();
      if (doc === null) return;
      const p = Number(rollout.value);
      const headers = {};
      if (state.exists) headers['If-Match'] = state.etag || String(state.entry.revision);
      saveBtn.disabled = true;
      try {
        const { data } = await api('PUT', configPath(kind, scope) + (p > 0 ? '?rollout=' + p : ''), { body: JSON.stringify(doc), headers });
        await load();
        flash(p > 0 ? `Saved revision ${data.revision}, rolled out to ${p} % of the instances.` : `Saved revision ${data.revision}.`);
      } catch (err) {
        if (err.status === 400) {
          showInvalid(err);
        } else if (err.status === 412 || err.status === 428) {
          banner.replaceChildren(errorBox(err, 'save'), el('button', { type: 'button', class: 'secondary', id: 'reload', text: 'Reload the current version (your edit is lost)', onclick: render }));
        } else {
          banner.replaceChildren(errorBox(err, 'save'));
        }
        saveBtn.disabled = false;
      }
    });

    function flash(msg) { banner.replaceChildren(el('div', { class: 'notice', id: 'saved', role: 'status', text: msg })); }

    async function act(what, method, path) {
      try {
        await api(method, path);
        await load();
        flash(what + ' done.');
      } catch (err) { banner.replaceChildren(errorBox(err, what)); }
    }

    async function load() {
      try {
        const { data, etag } = await api('GET', configPath(kind, scope));
        state.entry = data; state.etag = etag; state.exists = true;
      } catch (err) {
        if (err.status !== 404) { banner.replaceChildren(errorBox(err, 'load')); return; }
        state.entry = null; state.etag = null; state.exists = false;
      }
      const e = state.entry;
      meta.textContent = e ? `revision ${e.revision} · by ${e.updated_by || '–'} at ${fmt.time(e.updated_at_ms)}` : 'This config does not exist yet: saving creates it.';
      editor.value = e ? pretty(e.document) : pretty(templates[kind] || {});
      setValidation(null);
      diffBox.replaceChildren(el('p', { class: 'muted', text: 'Edit the document, then review the changes.' }));
      saveBtn.disabled = true;
      rollout.value = 0; showRollout();
      rollout.disabled = !e;
      deleteBtn.hidden = !e;
      delete deleteBtn.dataset.armed;
      deleteBtn.textContent = 'Delete';
      drawRollout();
      drawHistory();
      drawPins();
    }

    function drawRollout() {
      const e = state.entry;
      rolloutBox.replaceChildren();
      statusBox.replaceChildren();
      if (!e) { rolloutBox.append(el('p', { class: 'muted', text: 'A new config is written to every instance; roll out its later versions.' })); return; }
      if (!e.rollout) {
        rolloutBox.append(el('p', { id: 'rollout-state', text: 'No rollout in progress: every instance runs revision ' + e.revision + '. Move the slider by Save to stage the next version to part of the instances.' }));
      } else {
        const r = e.rollout;
        const promote = el('input', { type: 'range', id: 'promote-slider', min: r.percent + 1, max: 100, step: 1, value: Math.min(100, Math.max(r.percent + 1, 50)) });
        const label = el('span', { id: 'promote-label' });
        const show = () => { label.textContent = promote.value + ' %'; };
        promote.addEventListener('input', show); show();
        rolloutBox.append(el('p', { id: 'rollout-state' }, el('span', { class: 'badge degraded', text: r.percent + ' %' }),
          ` of the instances run revision ${e.revision}; the others the previous document (revision ${r.previous_revision}).`),
          el('div', { class: 'row' }, el('label', { class: 'slider' }, 'Widen to', promote, label),
            el('button', { type: 'button', id: 'promote', text: 'Promote', onclick: () => act('Promote to ' + promote.value + ' %', 'POST', configPath(kind, scope) + '/promote?percent=' + promote.value) }),
            el('button', { type: 'button', id: 'abort', class: 'danger', text: 'Abort rollout', onclick: () => act('Abort', 'POST', configPath(kind, scope) + '/abort') })));
      }
      api('GET', configPath(kind, scope) + '/status').then(({ data }) => {
        const by = Object.entries(data.by_revision || {});
        statusBox.append(el('p', { class: 'muted', text: data.instances ? `${data.instances} instance(s) report: ` + by.map(([r, n]) => `${n} on revision ${r}`).join(', ') : 'No instance has reported applying a version of this config yet.' }));
      }).catch(() => {});
    }

    async function drawHistory() {
      history.replaceChildren(el('h2', { text: 'History' }));
      if (!state.exists) { history.append(el('p', { class: 'muted', text: 'No version yet.' })); return; }
      try {
        const { data } = await api('GET', configPath(kind, scope) + '/history');
        const versions = data.versions || [];
        history.append(el('table', { id: 'history-table' },
          el('thead', {}, el('tr', {}, ['Revision', 'By', 'At', 'Note', 'Document', ''].map((h) => el('th', { text: h })))),
          el('tbody', {}, versions.map((v, i) => el('tr', { 'data-revision': v.revision },
            el('td', { text: v.revision }),
            el('td', { text: v.updated_by || '–' }),
            el('td', { text: fmt.time(v.updated_at_ms) }),
            el('td', { text: (i === 0 ? 'current' : '') + (v.rollout ? ` rollout ${v.rollout.percent} %` : '') + (v.deleted ? ' deleted after' : '') }),
            el('td', {}, el('details', {}, el('summary', { text: 'show' }), el('pre', { text: pretty(v.document) }))),
            el('td', {}, i === 0 && state.entry && v.revision === state.entry.revision ? '' :
              el('button', { type: 'button', class: 'secondary rollback', 'data-revision': v.revision, text: 'Roll back to this',
                onclick: () => act('Rollback to revision ' + v.revision, 'POST', configPath(kind, scope) + '/rollback?to=' + v.revision) })))))));
      } catch (err) { history.append(errorBox(err, 'history')); }
    }

    async function drawPins() {
      pinBox.replaceChildren(el('h2', { text: 'Pin' }));
      if (!state.exists) { pinBox.append(el('p', { class: 'muted', text: 'Nothing to pin yet.' })); return; }
      const svc = el('input', { type: 'text', id: 'pin-service', value: applier, placeholder: 'service' });
      const rev = el('input', { type: 'number', id: 'pin-revision', value: state.entry.revision, min: 1 });
      const status = el('div');
      const pins = el('div');
      const f = el('form', { class: 'row' }, 'Hold the instances of', svc, 'to revision', rev, el('button', { type: 'submit', id: 'pin', text: 'Pin' }));
      f.addEventListener('submit', async (e) => {
        e.preventDefault();
        try {
          await api('POST', '/v1/pins/' + enc(svc.value.trim()), { body: JSON.stringify({ kind, scope, revision: Number(rev.value) }) });
          status.replaceChildren(el('div', { class: 'notice', text: `Pinned ${svc.value.trim()} to revision ${rev.value}.` }));
          showPins();
        } catch (err) { status.replaceChildren(errorBox(err, 'pin')); }
      });
      pinBox.append(el('p', { class: 'muted', text: 'A pinned service applies that version whatever rollout or write follows, until unpinned.' }), f, status, pins);
      async function showPins() {
        try {
          const { data } = await api('GET', '/v1/pins/' + enc(svc.value.trim()));
          const mine = (data.pins || []).filter((p) => p.kind === kind && p.scope === scope);
          pins.replaceChildren(pinTable(svc.value.trim(), mine, showPins));
        } catch (err) { pins.replaceChildren(errorBox(err, 'pins')); }
      }
      showPins();
    }

    load();
  }

  // ---------- access dry-run ----------

  function accessPage(params) {
    const service = params.get('service') || '';
    const input = el('input', { type: 'text', id: 'access-service', placeholder: 'service', value: service });
    const form = el('form', { class: 'row' }, input, el('button', { type: 'submit', text: 'Show' }));
    form.addEventListener('submit', (e) => { e.preventDefault(); location.hash = '#/access?service=' + enc(input.value.trim()); });
    const out = el('div', { class: 'card', id: 'dry-run' });
    app.append(el('h1', { text: 'Access control dry-run' }),
      el('p', { class: 'muted', text: 'The callers a service\'s dry_run access rules would block, as its data planes report them: read this before switching a rule to enforce.' }),
      form, out);
    if (!service) { out.append(el('p', { class: 'muted', text: 'Name a service.' })); return; }
    out.append(el('p', { class: 'muted', text: 'Loading…' }));
    api('GET', '/v1/access/dry-run?service=' + enc(service)).then(({ data }) => {
      const rules = data.dry_run_rules || [];
      const denials = data.denials || [];
      out.replaceChildren(el('p', { class: 'muted', text: `${data.service} · counted by shard ${data.shard || '–'}` }),
        el('h2', { text: 'Rules in dry_run mode' }),
        rules.length ? el('table', {}, el('thead', {}, el('tr', {}, ['Rule', 'Type', 'Callers', 'Methods'].map((h) => el('th', { text: h })))),
          el('tbody', {}, rules.map((r) => el('tr', {}, el('td', { text: r.name }), el('td', { text: r.type }),
            el('td', { text: (r.callers || []).join(', ') }), el('td', { text: (r.methods || []).join(', ') || 'every method' })))))
          : el('p', { class: 'muted', text: 'None: no rule of ' + data.service + ' is in dry_run mode.' }),
        el('h2', { text: 'Would-be denials' }),
        denials.length ? el('table', { id: 'denials' }, el('thead', {}, el('tr', {}, ['Caller', 'Rule', 'Requests', 'Last seen'].map((h) => el('th', { text: h })))),
          el('tbody', {}, denials.map((d) => el('tr', {}, el('td', { text: d.caller_service }), el('td', { text: d.rule }),
            el('td', { class: 'num', text: fmt.num(d.count, 0) }), el('td', { text: fmt.time(d.last_seen_ms) })))))
          : el('p', { class: 'muted', text: 'None reported.' }));
    }).catch((err) => out.replaceChildren(errorBox(err, 'dry-run report')));
    // Every caller seen, read against the rules (GET /v1/access/inspection).
    const insp = el('div', { class: 'card', id: 'inspection' }, el('p', { class: 'muted', text: 'Loading…' }));
    app.append(insp);
    api('GET', '/v1/access/inspection?service=' + enc(service)).then(({ data }) => {
      const callers = data.callers || [];
      const verdict = { allowed: 'healthy', denied: 'critical', dry_run_denied: 'degraded' };
      insp.replaceChildren(el('h2', { text: 'Callers seen, against the rules' }),
        callers.length ? el('table', { id: 'callers' },
          el('thead', {}, el('tr', {}, ['Caller', 'Verdict', 'By rule', 'Named by', 'Requests', 'Last seen'].map((h) => el('th', { text: h })))),
          el('tbody', {}, callers.map((c) => el('tr', {},
            el('td', { text: c.service }),
            el('td', {}, el('span', { class: 'badge ' + (verdict[c.verdict] || ''), text: c.verdict })),
            el('td', { text: c.rule || '–' }),
            el('td', { text: (c.named_by || []).join(', ') || '–' }),
            el('td', { class: 'num', text: fmt.num(c.requests, 0) }),
            el('td', { text: fmt.time(c.last_seen_ms) })))))
          : el('p', { class: 'muted', text: 'No caller seen in telemetry yet.' }),
        (data.unused_rules || []).length ? el('p', {}, 'Rules no caller seen uses: ', (data.unused_rules || []).join(', ')) : '',
        (data.uncovered_callers || []).length ? el('p', {}, 'Callers no rule names: ', (data.uncovered_callers || []).join(', ')) : '');
    }).catch((err) => insp.replaceChildren(errorBox(err, 'inspection')));
  }

  // ---------- audit ----------

  // revisions says which revision a write replaced (and made, when the
  // record holds it).
  function revisions(a) {
    if (a.new_revision) return `${a.old_revision || 'none'} → ${a.new_revision}`;
    return a.old_revision ? 'over ' + a.old_revision : '–';
  }

  function auditPage(params) {
    const limit = params.get('limit') || '100';
    const sel = el('select', { id: 'audit-limit', onchange: (e) => { location.hash = '#/audit?limit=' + e.target.value; } },
      ['50', '100', '500', '1000'].map((n) => el('option', { value: n, text: 'newest ' + n })));
    sel.value = limit;
    const out = el('div', {}, el('p', { class: 'muted', text: 'Loading…' }));
    app.append(el('h1', { text: 'Audit log' }), el('div', { class: 'row' }, sel), out);
    api('GET', '/v1/audit?limit=' + enc(limit)).then(({ data }) => {
      const entries = data.entries || [];
      out.replaceChildren(el('table', { id: 'audit' },
        el('thead', {}, el('tr', {}, ['When', 'Who', 'Action', 'Kind', 'Scope / service', 'Revision', 'Detail'].map((h) => el('th', { text: h })))),
        el('tbody', {}, entries.length ? entries.map((a) => el('tr', {},
          el('td', { text: fmt.time(a.at_ms) }), el('td', { text: a.who }), el('td', { text: a.action }),
          el('td', { text: a.kind || '–' }),
          el('td', {}, a.kind && a.scope ? el('a', { href: '#/config/' + enc(a.kind) + '/' + encScope(a.scope), text: a.scope }) : (a.service || a.scope || '–')),
          el('td', { text: revisions(a) }),
          el('td', { text: a.detail || '' })))
          : el('tr', {}, el('td', { colspan: 7, class: 'muted', text: 'No write recorded.' })))));
    }).catch((err) => out.replaceChildren(errorBox(err, 'audit log')));
  }

  render();
})();
