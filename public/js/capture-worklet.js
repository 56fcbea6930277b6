// camrelay: AudioWorklet processor on the microphone. Collects 128-frame render quanta into
// 20 ms chunks (planar Float32, up to 2 channels) and posts them to the page (buffers transferred).
class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = (options && options.processorOptions) || {};
    this.channels = Math.max(1, Math.min(2, o.channels || 1));
    this.frames = Math.round(sampleRate * (o.chunkMs || 20) / 1000);
    this.alloc();
    this.running = true;
    this.port.onmessage = (e) => { if (e.data === 'stop') this.running = false; };
  }
  alloc() {
    this.buf = [];
    for (let c = 0; c < this.channels; c++) this.buf.push(new Float32Array(this.frames));
    this.fill = 0;
  }
  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0) return this.running; // no input connected yet
    const n = input[0].length;
    let off = 0;
    while (off < n) {
      const take = Math.min(n - off, this.frames - this.fill);
      for (let c = 0; c < this.channels; c++) {
        const src = input[Math.min(c, input.length - 1)];
        this.buf[c].set(src.subarray(off, off + take), this.fill);
      }
      this.fill += take;
      off += take;
      if (this.fill === this.frames) {
        // `currentTime` is the context time of this quantum's first frame; the page maps it to its clock.
        const endTime = currentTime + off / sampleRate;
        this.port.postMessage({ planes: this.buf, frames: this.frames, sampleRate, endTime },
          this.buf.map((b) => b.buffer));
        this.alloc();
      }
    }
    return this.running;
  }
}
registerProcessor('capture-processor', CaptureProcessor);
