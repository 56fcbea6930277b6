// Benchmark peer: the camrelay relay contract written the way most Node.js users would, with `ws`.
//
// /ws/publish/{name}: one publisher per stream; /ws/watch/{name}: any number of watchers. Every
// binary message is passed to `send` on each watcher (ws frames it per watcher). Text is ignored.
//
// Usage: node relay.js PORT   (0 picks a free port; the real one is printed on stdout)
'use strict';

const http = require('http');
const { WebSocketServer } = require('ws');

// `send` never refuses data, so an as-fast-as-possible publisher would grow the watchers' buffers
// without bound: pause reading the publisher while a watcher has more than this unsent.
const HIGH_WATER = 8 * 1024 * 1024;
const LOW_WATER = 1024 * 1024;

/** name -> { publisher, watchers: Set<WebSocket> } */
const streams = new Map();

function stream(name) {
  let s = streams.get(name);
  if (!s) {
    s = { publisher: null, watchers: new Set(), paused: false };
    streams.set(name, s);
  }
  return s;
}

function maxBuffered(s) {
  let max = 0;
  for (const w of s.watchers) max = Math.max(max, w.bufferedAmount);
  return max;
}

function resumeWhenDrained(s) {
  const timer = setInterval(() => {
    if (maxBuffered(s) <= LOW_WATER || !s.publisher) {
      clearInterval(timer);
      s.paused = false;
      if (s.publisher) s.publisher.resume();
    }
  }, 1);
}

const wss = new WebSocketServer({ noServer: true, maxPayload: 64 * 1024 * 1024 });
const server = http.createServer((req, res) => {
  res.writeHead(404);
  res.end();
});

server.on('upgrade', (req, socket, head) => {
  const path = new URL(req.url, 'http://x').pathname;
  const m = /^\/ws\/(publish|watch)\/([^/]+)$/.exec(path);
  if (!m) {
    socket.destroy();
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    ws._socket.setNoDelay(true);
    const s = stream(m[2]);
    if (m[1] === 'watch') {
      s.watchers.add(ws);
      ws.on('close', () => s.watchers.delete(ws));
      ws.on('error', () => s.watchers.delete(ws));
      return;
    }
    s.publisher = ws;
    ws.on('message', (data, isBinary) => {
      if (!isBinary) return;
      for (const w of s.watchers) w.send(data, { binary: true });
      if (!s.paused && maxBuffered(s) > HIGH_WATER) {
        s.paused = true;
        ws.pause();
        resumeWhenDrained(s);
      }
    });
    ws.on('close', () => {
      if (s.publisher === ws) s.publisher = null;
    });
    ws.on('error', () => {});
  });
});

server.listen(Number(process.argv[2] || 0), '127.0.0.1', () => {
  console.log(`listening on http://127.0.0.1:${server.address().port}`);
});
