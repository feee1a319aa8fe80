// msagent's run-length code of an H×W mask (msagent.types.encode_mask): row-major runs,
// alternating background / foreground, starting with background.

// {size: [H, W], counts: [...]} → {width, height, bits: Uint8Array (1 = foreground), area}
export function decodeMask(rle) {
  const [height, width] = rle.size;
  const bits = new Uint8Array(height * width);
  let offset = 0;
  let area = 0;
  rle.counts.forEach((count, i) => {
    if (i % 2 === 1) {
      bits.fill(1, offset, offset + count);
      area += count;
    }
    offset += count;
  });
  if (offset !== height * width) {
    throw new Error(`mask code covers ${offset} pixels, expected ${height * width}`);
  }
  return { width, height, bits, area };
}

// Inverse of decodeMask (for sending masks back to the server).
export function encodeMask(mask) {
  const counts = [];
  let current = 0;
  let run = 0;
  for (let i = 0; i < mask.bits.length; i++) {
    const value = mask.bits[i] ? 1 : 0;
    if (value !== current) {
      counts.push(run);
      run = 0;
      current = value;
    }
    run++;
  }
  counts.push(run);
  return { size: [mask.height, mask.width], counts };
}

// RGBA pixels of a mask: a translucent fill and an opaque contour (4-neighbourhood edge).
export function maskPixels(mask, fill, edge) {
  const { width, height, bits } = mask;
  const rgba = new Uint8ClampedArray(width * height * 4);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = y * width + x;
      if (!bits[i]) continue;
      const border = x === 0 || y === 0 || x === width - 1 || y === height - 1 ||
        !bits[i - 1] || !bits[i + 1] || !bits[i - width] || !bits[i + width];
      const color = border ? edge : fill;
      if (!color) continue;
      rgba.set(color, i * 4);
    }
  }
  return new ImageData(rgba, width, height);
}
