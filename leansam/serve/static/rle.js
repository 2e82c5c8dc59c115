// COCO RLE in the browser: decode pycocotools' compressed string form into run lengths and
// paint a mask. Runs alternate 0/1 starting with 0, in column-major (Fortran) pixel order.
"use strict";

function rleCounts(str) {
  // pycocotools rleFrString: 5-bit groups, 0x20 = more groups follow, 0x10 = sign of the last group;
  // from the third count on, each value is a difference to the count two places before.
  const counts = [];
  let p = 0;
  while (p < str.length) {
    let x = 0, k = 0, more = 1, c = 0;
    while (more) {
      c = str.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = c & 0x20;
      p++; k++;
      if (!more && (c & 0x10)) x |= -1 << (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

// Paints mask pixels of `rle` ({size: [h, w], counts: str}) into RGBA `data` with `rgba` colour.
function paintRle(rle, data, rgba) {
  const [h, w] = rle.size;
  const counts = rleCounts(rle.counts);
  let idx = 0;
  for (let i = 0; i < counts.length; i++) {
    const n = counts[i];
    if (i % 2 === 1) {
      for (let j = idx; j < idx + n; j++) {
        const y = j % h, x = (j - y) / h, o = 4 * (y * w + x);
        data[o] = rgba[0]; data[o + 1] = rgba[1]; data[o + 2] = rgba[2]; data[o + 3] = rgba[3];
      }
    }
    idx += n;
  }
}
