// The image canvas: the image, the mask overlay, the ground-truth contour, the prompts, and
// the annotation gestures (drag: box; click: positive point; shift/alt/right click: negative).
//
// Coordinates given to callbacks and drawn are pixel XY of the original image (x right,
// y down, integer indices; boxes XYXY with inclusive corners), as the server's session API.

import { maskPixels } from "./rle.js";

const MASK_FILL = [0, 170, 255, 105];
const MASK_EDGE = [0, 220, 255, 255];
const GT_EDGE = [255, 214, 0, 255];
const POSITIVE = "#2ecc40";
const NEGATIVE = "#ff4136";
const DRAG_THRESHOLD = 4; // display pixels before a press becomes a box drag

export class Viewer {
  constructor(canvas, { onBox, onPoint }) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.onBox = onBox;
    this.onPoint = onPoint;
    this.image = null; // ImageBitmap
    this.width = 0;
    this.height = 0;
    this.scene = {};
    this.layers = { mask: null, gt: null }; // offscreen canvases at image resolution
    this.press = null;
    this.band = null;
    this.enabled = true;
    canvas.addEventListener("pointerdown", (e) => this.down(e));
    canvas.addEventListener("pointermove", (e) => this.move(e));
    canvas.addEventListener("pointerup", (e) => this.up(e));
    canvas.addEventListener("pointercancel", () => { this.press = null; this.band = null; this.draw(); });
    canvas.addEventListener("contextmenu", (e) => e.preventDefault());
    new ResizeObserver(() => this.fit()).observe(canvas.parentElement);
  }

  setImage(bitmap) {
    this.image = bitmap;
    this.width = bitmap ? bitmap.width : 0;
    this.height = bitmap ? bitmap.height : 0;
    this.canvas.dataset.width = this.width;
    this.canvas.dataset.height = this.height;
    this.scene = {};
    this.layers = { mask: null, gt: null };
    this.fit();
  }

  // scene: {mask, gt, prompts: {box, points}, highlight: {box} | {point}, showMask, showGt}
  // (mask and gt as decodeMask() objects or null)
  update(scene) {
    if (scene.mask !== this.scene.mask) this.layers.mask = this.layer(scene.mask, MASK_FILL, MASK_EDGE);
    if (scene.gt !== this.scene.gt) this.layers.gt = this.layer(scene.gt, null, GT_EDGE);
    this.scene = scene;
    this.canvas.dataset.maskArea = scene.mask && scene.showMask ? scene.mask.area : 0;
    this.canvas.dataset.points = scene.prompts ? scene.prompts.points.length : 0;
    this.canvas.dataset.box = scene.prompts && scene.prompts.box ? "1" : "0";
    this.draw();
  }

  layer(mask, fill, edge) {
    if (!mask || mask.width !== this.width || mask.height !== this.height) return null;
    const layer = document.createElement("canvas");
    layer.width = mask.width;
    layer.height = mask.height;
    layer.getContext("2d").putImageData(maskPixels(mask, fill, edge), 0, 0);
    return layer;
  }

  // Size the canvas to fit its container (upscaling small images), sharp on HiDPI screens.
  fit() {
    const wrap = this.canvas.parentElement;
    if (!this.image) {
      this.canvas.width = this.canvas.height = 0;
      return;
    }
    const maxW = Math.max(wrap.clientWidth - 2, 100);
    const maxH = Math.max(window.innerHeight * 0.72, 240);
    this.scale = Math.min(maxW / this.width, maxH / this.height);
    const dpr = window.devicePixelRatio || 1;
    const w = Math.round(this.width * this.scale);
    const h = Math.round(this.height * this.scale);
    this.canvas.style.width = `${w}px`;
    this.canvas.style.height = `${h}px`;
    this.canvas.width = Math.round(w * dpr);
    this.canvas.height = Math.round(h * dpr);
    this.ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    this.draw();
  }

  draw() {
    const { ctx, scene } = this;
    if (!this.image) return;
    const s = this.scale;
    ctx.clearRect(0, 0, this.width * s, this.height * s);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(this.image, 0, 0, this.width * s, this.height * s);
    if (this.layers.mask && scene.showMask) ctx.drawImage(this.layers.mask, 0, 0, this.width * s, this.height * s);
    if (this.layers.gt && scene.showGt) ctx.drawImage(this.layers.gt, 0, 0, this.width * s, this.height * s);
    const prompts = scene.prompts || { box: null, points: [] };
    const hi = scene.highlight || {};
    if (prompts.box) this.drawBox(prompts.box, hi.box ? "#ffeb3b" : POSITIVE, hi.box ? 3 : 2);
    for (const p of prompts.points) {
      const isNew = hi.point && hi.point.x === p.x && hi.point.y === p.y && hi.point.label === p.label;
      this.drawPoint(p, isNew);
    }
    if (this.band) this.drawBox(this.band, "#ffffff", 1.5, [6, 4]);
  }

  drawBox(box, color, width, dash = []) {
    const s = this.scale;
    const { ctx } = this;
    ctx.save();
    ctx.setLineDash(dash);
    ctx.lineWidth = width;
    ctx.strokeStyle = "rgba(0,0,0,0.6)";
    ctx.strokeRect(box.x1 * s, box.y1 * s, (box.x2 - box.x1 + 1) * s, (box.y2 - box.y1 + 1) * s);
    ctx.strokeStyle = color;
    ctx.lineWidth = Math.max(width - 1, 1);
    ctx.strokeRect(box.x1 * s, box.y1 * s, (box.x2 - box.x1 + 1) * s, (box.y2 - box.y1 + 1) * s);
    ctx.restore();
  }

  drawPoint(p, highlight) {
    const s = this.scale;
    const { ctx } = this;
    const x = (p.x + 0.5) * s;
    const y = (p.y + 0.5) * s;
    ctx.save();
    if (highlight) {
      ctx.beginPath();
      ctx.arc(x, y, 11, 0, 2 * Math.PI);
      ctx.strokeStyle = "#ffeb3b";
      ctx.lineWidth = 2.5;
      ctx.stroke();
    }
    ctx.beginPath();
    ctx.arc(x, y, 6, 0, 2 * Math.PI);
    ctx.fillStyle = p.label === 1 ? POSITIVE : NEGATIVE;
    ctx.fill();
    ctx.lineWidth = 1.5;
    ctx.strokeStyle = "#fff";
    ctx.stroke();
    ctx.fillStyle = "#fff";
    ctx.fillRect(x - 3, y - 0.75, 6, 1.5);
    if (p.label === 1) ctx.fillRect(x - 0.75, y - 3, 1.5, 6);
    ctx.restore();
  }

  // -- gestures ---------------------------------------------------------------------------
  pixel(event) {
    const rect = this.canvas.getBoundingClientRect();
    const x = Math.floor(((event.clientX - rect.left) / rect.width) * this.width);
    const y = Math.floor(((event.clientY - rect.top) / rect.height) * this.height);
    return {
      x: Math.min(Math.max(x, 0), this.width - 1),
      y: Math.min(Math.max(y, 0), this.height - 1),
    };
  }

  down(event) {
    if (!this.image || !this.enabled || event.button === 1) return;
    event.preventDefault();
    this.canvas.setPointerCapture(event.pointerId);
    this.press = { ...this.pixel(event), cx: event.clientX, cy: event.clientY, button: event.button,
      negative: event.button === 2 || event.shiftKey || event.altKey, dragging: false };
  }

  move(event) {
    const press = this.press;
    if (!press) return;
    const far = Math.hypot(event.clientX - press.cx, event.clientY - press.cy) > DRAG_THRESHOLD;
    if (press.button === 0 && (press.dragging || far)) {
      press.dragging = true;
      const p = this.pixel(event);
      this.band = { x1: Math.min(press.x, p.x), y1: Math.min(press.y, p.y),
        x2: Math.max(press.x, p.x), y2: Math.max(press.y, p.y) };
      this.draw();
    }
  }

  up(event) {
    const press = this.press;
    this.press = null;
    if (!press) return;
    const band = this.band;
    this.band = null;
    this.draw();
    if (press.dragging && band) {
      this.onBox(band);
    } else {
      this.onPoint({ x: press.x, y: press.y, label: press.negative ? 0 : 1 });
    }
  }
}
