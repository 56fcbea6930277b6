// camrelay home page: the live streams from /api/streams, refreshed every few seconds.
import { fetchInfo, fmtDuration, fmtKbps, ICON } from '/js/common.js';

const $ = (id) => document.getElementById(id);
const REFRESH_MS = 3000;
const prev = new Map(); // name -> {bytes, at}: to show each stream's bitrate

function card(s, serverNow) {
  const a = document.createElement('a');
  a.className = 'card stream-card';
  a.href = '/cast/' + encodeURIComponent(s.name);
  const thumb = document.createElement('div');
  thumb.className = 'thumb';
  thumb.innerHTML = '<span class="badge live">live</span><span class="play"></span>';
  const meta = document.createElement('div');
  meta.className = 'meta';
  const title = document.createElement('div');
  title.className = 'name';
  title.textContent = s.name;
  const sub = document.createElement('div');
  sub.className = 'sub';
  const watchers = document.createElement('span');
  watchers.innerHTML = `${ICON.eye} ${s.watchers} watching`;
  const since = document.createElement('span');
  if (s.live_since_ms) since.innerHTML = `${ICON.clock} ${fmtDuration(serverNow - s.live_since_ms)}`;
  const rate = document.createElement('span');
  const p = prev.get(s.name);
  const now = performance.now();
  if (p && now > p.at && s.bytes_in >= p.bytes) rate.innerHTML = ICON.rate + ' ' + fmtKbps((s.bytes_in - p.bytes) * 8 / ((now - p.at) / 1000));
  prev.set(s.name, { bytes: s.bytes_in, at: now });
  sub.append(watchers, since, rate);
  meta.append(title, sub);
  a.append(thumb, meta);
  return a;
}

async function refresh() {
  try {
    const r = await fetch('/api/streams', { cache: 'no-store' });
    if (!r.ok) throw new Error('HTTP ' + r.status);
    const list = await r.json();
    list.sort((a, b) => b.watchers - a.watchers || a.name.localeCompare(b.name));
    // live_since_ms is the server's Unix time in ms; assume clocks are close enough for a duration display.
    const grid = $('streams');
    grid.replaceChildren(...list.map((s) => card(s, Date.now())));
    $('empty').hidden = list.length > 0;
    $('error').hidden = true;
    $('updated').textContent = `${list.length} live · updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    $('error').textContent = 'Cannot reach the server right now (' + e.message + '). Retrying…';
    $('error').hidden = false;
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
document.addEventListener('visibilitychange', () => { if (!document.hidden) refresh(); });
fetchInfo().then((i) => { if (i.version) $('version').textContent = ` · camrelay ${i.version}`; });
