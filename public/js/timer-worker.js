// camrelay: a steady tick for the pages. Dedicated-worker timers keep their rate in background
// tabs, where page timers drop to once a second and requestAnimationFrame stops.
let id = null;
self.onmessage = (e) => {
  const { cmd, interval } = e.data || {};
  if (id !== null) { clearInterval(id); id = null; }
  if (cmd === 'start') id = setInterval(() => self.postMessage(performance.now()), Math.max(4, interval | 0));
};
