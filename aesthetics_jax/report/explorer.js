'use strict';
// aesthetics-jax explorer: the grid (sort, filter, pages) and the per-image maps.
// Everything it reads is inline (the table) or a sibling file loaded with <img> / <script>,
// which browsers allow from file:// where fetch() is refused.
(function () {
  let D;
  try {  // a page cut short or edited: say so in it (it stayed blank, an uncaught error)
    D = JSON.parse(document.getElementById('explorer-data').textContent);
    if (!D || !Array.isArray(D.rows) || !Array.isArray(D.columns)) throw new Error('no rows');
  } catch (e) {
    const grid = document.getElementById('grid');
    grid.className = 'damaged';
    grid.textContent = 'This page\'s own data is damaged (' + e.message + '): run ' +
        'aesthetics-evaluate on its workdir again to rewrite the explorer.';
    return;
  }
  const ROWS = D.rows.map(r => Object.fromEntries(D.columns.map((c, i) => [c, r[i]])));
  const HAS_TAG = D.arch === 'mobilenet_v2';
  const FIELDS = [  // [key, label, numeric]
    ['true', 'true score', true], ['pred', D.score_name, true],
    ['intensity', 'CAM intensity', true], ['intensity_global', 'CAM intensity (global)', true],
    ['image_id', 'image id', true], ['row', 'test order', true],
  ].concat(HAS_TAG ? [['tag', 'top tag', false]] : []);
  const RANGES = [['true', 'true'], ['pred', HAS_TAG ? 'pred' : 'p(high)'],
                  ['intensity', 'intensity']];
  const PW = 150;  // panel width (CSS px) in the detail view
  const PW_BUCKET = 84;  // the 10 score-bucket maps, a smaller row of their own
  const $ = id => document.getElementById(id);
  const state = {order: ROWS, page: 0, open: -1};
  const chunks = {};
  const waiting = {};

  // ---- helpers ---------------------------------------------------------------------------
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') e.className = v; else if (k === 'text') e.textContent = v;
      else e.setAttribute(k, v);
    }
    for (const k of kids) e.append(k);
    return e;
  }
  const fmt = (v, d = 2) => (v === null || v === undefined) ? 'n/a' : Number(v).toFixed(d);
  function targetLabel(t) {
    if (t === 'aesthetic') return HAS_TAG ? 'aesthetic (mean score)' : 'aesthetic (logit)';
    if (t.startsWith('bucket:')) return 'bucket ' + t.slice(7);  // score bucket k of 1-10
    if (t === 'top_tag') return 'top tag';
    if (t === 'low') return HAS_TAG ? 'low (negated mean score)' : 'low (negated logit)';
    return t;
  }

  // jet colormap (matplotlib's), 256 RGB entries.
  const JET = (() => {
    const seg = (x, pts) => {
      for (let i = 1; i < pts.length; i++) {
        if (x <= pts[i][0]) {
          const [x0, y0] = pts[i - 1], [x1, y1] = pts[i];
          return y0 + (y1 - y0) * (x - x0) / (x1 - x0);
        }
      }
      return pts[pts.length - 1][1];
    };
    const r = [[0, 0], [0.35, 0], [0.66, 1], [0.89, 1], [1, 0.5]];
    const g = [[0, 0], [0.125, 0], [0.375, 1], [0.64, 1], [0.91, 0], [1, 0]];
    const b = [[0, 0.5], [0.11, 1], [0.34, 1], [0.65, 0], [1, 0]];
    const lut = new Uint8ClampedArray(256 * 3);
    for (let i = 0; i < 256; i++) {
      const x = i / 255;
      lut[3 * i] = 255 * seg(x, r); lut[3 * i + 1] = 255 * seg(x, g); lut[3 * i + 2] = 255 * seg(x, b);
    }
    return lut;
  })();

  // ---- filters and sort --------------------------------------------------------------------
  function buildControls() {
    for (const [k, label] of FIELDS) $('sort').append(el('option', {value: k, text: label}));
    $('sort').value = 'true';
    for (const [k, label] of RANGES) {
      $('ranges').append(el('span', {class: 'range'}, label + ' ',
          el('input', {type: 'number', step: 'any', id: 'min-' + k, placeholder: 'min',
                       'aria-label': label + ' min'}), ' – ',
          el('input', {type: 'number', step: 'any', id: 'max-' + k, placeholder: 'max',
                       'aria-label': label + ' max'}), ' '));
    }
    if (HAS_TAG) {
      // A Map: on a plain object, tags named 'constructor' or '__proto__' hit its prototype.
      const counts = new Map();
      for (const r of ROWS) counts.set(r.tag, (counts.get(r.tag) || 0) + 1);
      for (const t of [...counts.keys()].sort()) {
        $('tag').append(el('option', {value: t, text: `${t} (${counts.get(t)})`}));
      }
    } else {
      $('tag-filter').hidden = true;
    }
    if (!D.regions) $('region-filter').hidden = true;
    // The grid's region verdicts are the first method's (the evaluation's own).
    $('region-method').textContent = D.methods[0] || '';
    for (const id of ['sort', 'dir', 'tag', 'idq', 'wrong', 'emptyq', 'regionq', 'pagesize']) {
      $(id).addEventListener('input', () => { state.page = 0; update(); });
    }
    $('ranges').addEventListener('input', () => { state.page = 0; update(); });
    $('reset').addEventListener('click', () => {
      // Not $('controls').reset(): a form's named controls shadow its methods, and
      // form.reset is the button id="reset" (a TypeError; the button did nothing).
      HTMLFormElement.prototype.reset.call($('controls'));
      $('sort').value = 'true'; state.page = 0; update();
    });
    for (const b of document.querySelectorAll('.prev')) b.addEventListener('click', () => turn(-1));
    for (const b of document.querySelectorAll('.next')) b.addEventListener('click', () => turn(1));
  }

  function num(id) {
    const v = $(id).value;
    return v === '' ? null : Number(v);
  }

  function filtered() {
    const lim = RANGES.map(([k]) => [k, num('min-' + k), num('max-' + k)]);
    const tag = $('tag').value, idq = $('idq').value.trim();
    const wrong = $('wrong').checked, emptyq = $('emptyq').checked;
    const regionq = $('regionq').value;
    const rows = ROWS.filter(r => {
      for (const [k, lo, hi] of lim) {
        if (lo !== null && !(r[k] >= lo)) return false;
        if (hi !== null && !(r[k] <= hi)) return false;
      }
      if (tag && r.tag !== tag) return false;
      if (idq && !String(r.image_id).includes(idq)) return false;
      if (wrong && r.label === r.pred_label) return false;
      if (emptyq && !r.empty) return false;
      if (regionq === 'region' && !r.region) return false;
      if (regionq === 'in' && r.hit !== true) return false;
      if (regionq === 'out' && (r.hit !== false || r.low_flat)) return false;
      if (regionq === 'flat' && !r.low_flat) return false;
      return true;
    });
    const key = $('sort').value, dir = Number($('dir').value);
    const cmp = (a, b) => {
      const x = a[key], y = b[key];
      if (x === y) return a.row - b.row;
      if (x === null) return 1;
      if (y === null) return -1;
      return (x < y ? -1 : 1) * dir;
    };
    return rows.sort(cmp);
  }

  // ---- grid --------------------------------------------------------------------------------
  function card(r) {
    const img = el('img', {src: `thumbs/${r.row}.jpg`, alt: `image ${r.image_id}`,
                           loading: 'lazy', width: r.w, height: r.h});
    // A missing or damaged file (the page copied without its folder): said, not a blank box.
    img.addEventListener('error', () => {
      img.style.visibility = 'hidden';
      img.after(el('p', {class: 'missing', text: `thumbs/${r.row}.jpg could not be loaded`}));
    });
    const wrong = r.label !== r.pred_label;
    const b = el('button', {class: 'card', type: 'button', 'data-row': r.row,
                            title: `image ${r.image_id}`},
        el('div', {class: 'thumb'}, img),
        el('div', {class: 'meta', text: `true ${fmt(r.true)} · ${HAS_TAG ? 'pred' : 'p'} ` +
                                        `${fmt(r.pred)}`}),
        el('div', {class: 'meta', text: `CAM ${fmt(r.intensity)}` +
                                        (HAS_TAG ? ` · ${r.tag}` : '')}));
    if (wrong) b.querySelector('.meta').classList.add('bad');
    if (r.empty) b.append(el('div', {class: 'meta empty-flag', text: 'empty map'}));
    if (r.region) {
      // hit null: the method's map was not computed for this image (scorecam's first N only).
      const where = r.low_flat ? 'nowhere' : r.hit === true ? 'inside'
                  : r.hit === false ? 'outside' : 'not computed';
      b.append(el('div', {class: 'meta region-flag', text: `${D.methods[0]} low peak ${where}`}));
    }
    b.addEventListener('click', () => openDetail(r.row));
    return b;
  }

  function pageSize() { return Number($('pagesize').value); }

  function turn(d) {
    const pages = Math.max(1, Math.ceil(state.order.length / pageSize()));
    state.page = Math.min(pages - 1, Math.max(0, state.page + d));
    render();
    // From the bottom pager: back to the top of the new page (the view stayed at the
    // bottom, on the new page's last cards), the focus on the top pager's same button.
    const top = document.querySelector('.pager');
    if (top.getBoundingClientRect().top < 0) {
      top.scrollIntoView();
      const same = top.querySelector(d < 0 ? '.prev' : '.next');
      if (document.activeElement.closest('.pager') && !same.disabled) same.focus();
    }
  }

  function update() { state.order = filtered(); render(); }

  // ---- the view in the URL's hash ----------------------------------------------------------
  // '#sort=pred&wrong=1&page=2&image=5': the controls that differ from their defaults, the
  // page and the open image, so that a reload or a shared link shows the same view (a reload
  // kept the open image only: the grid went back to all images, and ← / → then stepped
  // through another order than the one the image was opened from).
  const VIEW_KEYS = ['sort', 'dir', 'tag', 'idq', 'wrong', 'emptyq', 'regionq', 'pagesize']
      .concat(RANGES.flatMap(([k]) => ['min-' + k, 'max-' + k]));

  function defaultOf(e) {
    if (e.type === 'checkbox') return e.defaultChecked;
    if (e.tagName === 'SELECT') {
      const o = [...e.options].find(x => x.defaultSelected) || e.options[0];
      return o ? o.value : '';
    }
    return e.defaultValue;
  }

  function saveView() {
    const q = new URLSearchParams();
    for (const id of VIEW_KEYS) {
      const e = $(id), v = e.type === 'checkbox' ? e.checked : e.value;
      if (v !== defaultOf(e)) q.set(id, e.type === 'checkbox' ? '1' : v);
    }
    if (state.page) q.set('page', String(state.page + 1));
    if (state.open >= 0) q.set('image', String(state.open));
    const h = q.toString();
    if (h ? location.hash !== '#' + h : location.hash) {
      history.replaceState(null, '', h ? '#' + h : location.pathname + location.search);
    }
  }

  function loadView() {
    const q = new URLSearchParams(location.hash.slice(1));
    for (const id of VIEW_KEYS) {
      const e = $(id), v = q.get(id);
      if (v === null) continue;
      if (e.type === 'checkbox') e.checked = v === '1';
      else if (e.tagName !== 'SELECT' || [...e.options].some(o => o.value === v)) e.value = v;
    }
    state.order = filtered();
    state.page = Math.max(0, (parseInt(q.get('page'), 10) || 1) - 1);
    render();
    const m = /^\d+$/.exec(q.get('image') || '');
    if (m && Number(m[0]) < ROWS.length) openDetail(Number(m[0]));
  }

  function render() {
    const ps = pageSize(), n = state.order.length;
    const pages = Math.max(1, Math.ceil(n / ps));
    state.page = Math.min(state.page, pages - 1);
    const rows = state.order.slice(state.page * ps, (state.page + 1) * ps);
    $('grid').replaceChildren(...rows.map(card));
    if (!n) $('grid').append(el('p', {class: 'missing', text: 'no image matches the filters'}));
    for (const s of document.querySelectorAll('.pageinfo')) {
      s.textContent = `page ${state.page + 1} / ${pages} · ${n} of ${ROWS.length} images`;
    }
    for (const b of document.querySelectorAll('.prev')) b.disabled = state.page === 0;
    for (const b of document.querySelectorAll('.next')) b.disabled = state.page >= pages - 1;
    saveView();
  }

  // ---- maps, loaded per chunk ----------------------------------------------------------------
  window.explorerChunk = function (k, data) {
    chunks[k] = data;
    (waiting[k] || []).forEach(f => f[0](data));
    delete waiting[k];
  };

  function loadChunk(k) {
    if (chunks[k]) return Promise.resolve(chunks[k]);
    return new Promise((resolve, reject) => {
      const first = !waiting[k];
      (waiting[k] = waiting[k] || []).push([resolve, reject]);
      if (!first) return;
      const s = el('script', {src: `maps/${k}.js`});
      const fail = why => {
        (waiting[k] || []).forEach(f => f[1](new Error(`maps/${k}.js ${why}`)));
        delete waiting[k];
        s.remove();
      };
      s.onerror = () => fail('could not be loaded');
      // A truncated or edited file loads but never calls explorerChunk: say so rather than
      // leave 'loading maps…' up for ever.
      s.onload = () => { if (!chunks[k]) fail('is damaged: it loaded but defined no maps'); };
      document.head.append(s);
    });
  }

  function decode(b64) {
    const s = atob(b64), out = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }

  // A region mask: {hw: [h, w], bits: base64 of the packed bits} -> {h, w, at(y, x)}.
  function regionOf(rec) {
    if (!rec.region) return null;
    const [h, w] = rec.region.hw, bytes = decode(rec.region.bits);
    const at = (y, x) => y >= 0 && x >= 0 && y < h && x < w &&
                         ((bytes[(y * w + x) >> 3] >> (7 - ((y * w + x) & 7))) & 1) === 1;
    return {h, w, at};
  }

  // The region's outline: every cell edge between inside and outside, on a canvas of the
  // panel's size (the grid stretched to the image's aspect, as the maps are).
  function drawRegion(ctx, region, cw, ch, dpr) {
    const sy = ch / region.h, sx = cw / region.w;
    ctx.strokeStyle = '#ff00ff';
    ctx.lineWidth = 2 * dpr;
    ctx.beginPath();
    for (let y = 0; y < region.h; y++) {
      for (let x = 0; x < region.w; x++) {
        if (!region.at(y, x)) continue;
        if (!region.at(y - 1, x)) { ctx.moveTo(x * sx, y * sy); ctx.lineTo((x + 1) * sx, y * sy); }
        if (!region.at(y + 1, x)) {
          ctx.moveTo(x * sx, (y + 1) * sy); ctx.lineTo((x + 1) * sx, (y + 1) * sy);
        }
        if (!region.at(y, x - 1)) { ctx.moveTo(x * sx, y * sy); ctx.lineTo(x * sx, (y + 1) * sy); }
        if (!region.at(y, x + 1)) {
          ctx.moveTo((x + 1) * sx, y * sy); ctx.lineTo((x + 1) * sx, (y + 1) * sy);
        }
      }
    }
    ctx.stroke();
  }

  // The low map's peak (the pointing game's argmax cell): a ring, so the cell it marks stays
  // visible; green inside the region, yellow outside.
  function drawPeak(ctx, peak, cw, ch, dpr) {
    const [y, x, hit] = peak;
    for (const [colour, width] of [['#000000', 5], [hit ? '#00e676' : '#ffea00', 2.5]]) {
      ctx.beginPath();
      ctx.arc(x * cw, y * ch, 7 * dpr, 0, 2 * Math.PI);
      ctx.lineWidth = width * dpr;
      ctx.strokeStyle = colour;
      ctx.stroke();
    }
  }

  function regionCanvas(region, w, h) {
    const dpr = window.devicePixelRatio || 1;
    const c = el('canvas', {class: 'region'});
    c.width = Math.round(w * dpr); c.height = Math.round(h * dpr);
    drawRegion(c.getContext('2d'), region, c.width, c.height, dpr);
    return c;
  }

  function frame(r, w, h) {
    return el('div', {class: 'frame', style: `width:${w}px;height:${h}px`},
              el('img', {src: `thumbs/${r.row}.jpg`, alt: ''}));
  }

  // A box that is the whole frame: its outline runs along the panel's edge, where it is missed
  // (the PNG overlays' legends say '(full frame)' too). Boxes are stored to 4 decimals.
  const fullFrame = b => b[0] <= 1e-4 && b[1] <= 1e-4 && b[2] >= 1 - 1e-4 && b[3] >= 1 - 1e-4;

  // extra (the low target only): {region, peak} of this image and method, either null.
  function mapPanel(r, pw, q, t, mhw, boxes, empty, extra) {
    const ph = Math.round(pw * r.h / r.w);
    const [mh, mw] = mhw;
    const off = document.createElement('canvas');
    off.width = mw; off.height = mh;
    const octx = off.getContext('2d');
    const im = octx.createImageData(mw, mh);
    const base = t * mh * mw;
    for (let i = 0; i < mh * mw; i++) {
      const v = q[base + i];
      im.data[4 * i] = JET[3 * v]; im.data[4 * i + 1] = JET[3 * v + 1];
      im.data[4 * i + 2] = JET[3 * v + 2]; im.data[4 * i + 3] = 255;
    }
    octx.putImageData(im, 0, 0);
    const dpr = window.devicePixelRatio || 1;
    const c = el('canvas', {class: 'map', 'data-target': D.targets[t]});
    c.width = Math.round(pw * dpr); c.height = Math.round(ph * dpr);
    const ctx = c.getContext('2d');
    ctx.imageSmoothingEnabled = true;  // bilinear upsampling of the CAM grid
    ctx.globalAlpha = 0.5;
    ctx.drawImage(off, 0, 0, c.width, c.height);
    ctx.globalAlpha = 1;
    ctx.lineWidth = 2 * dpr;
    const colours = {aesthetic: '#ffffff', average: '#ff3c3c', attribute: '#00c8ff'};
    for (const [name, b] of Object.entries(boxes || {})) {
      const [y0, x0, y1, x1] = b;
      ctx.strokeStyle = colours[name] || '#ffff00';
      ctx.strokeRect(x0 * c.width + ctx.lineWidth / 2, y0 * c.height + ctx.lineWidth / 2,
                     (x1 - x0) * c.width - ctx.lineWidth, (y1 - y0) * c.height - ctx.lineWidth);
    }
    const {region, peak} = extra || {};
    if (region) drawRegion(ctx, region, c.width, c.height, dpr);
    if (region && peak && peak[0] !== null) drawPeak(ctx, peak, c.width, c.height, dpr);
    const f = frame(r, pw, ph);
    f.append(c);
    const cap = el('figcaption', {text: targetLabel(D.targets[t]) +
                                        (D.targets[t] === 'top_tag' && r.tag ? `: ${r.tag}` : '')});
    if (empty) cap.append(el('span', {class: 'empty-flag', text: ' (empty map: no box)'}));
    const full = Object.keys(boxes || {}).filter(name => fullFrame(boxes[name]));
    if (full.length) {
      cap.append(el('span', {class: 'full-frame',
                             text: ` · ${full.join(' and ')} box${full.length > 1 ? 'es' : ''}` +
                                   ' = full frame'}));
    }
    if (region && peak) {
      const text = peak[0] === null ? ' · points nowhere: a miss'
                                    : ` · peak ${peak[2] ? 'inside' : 'outside'} the region`;
      cap.append(el('span', {class: peak[2] ? 'hit' : 'miss', text}));
    }
    return el('figure', {style: `width:${pw}px`}, f, cap);
  }

  function cropPanel(r, box) {
    if (!box) return el('figure', {}, el('p', {class: 'missing', text: 'no crop (empty map)'}));
    const [y0, x0, y1, x1] = box;
    const cw = Math.max(1e-6, (x1 - x0) * r.w), ch = Math.max(1e-6, (y1 - y0) * r.h);
    const fh = Math.round(PW * ch / cw);
    const iw = PW / Math.max(1e-6, x1 - x0);
    const img = el('img', {src: `thumbs/${r.row}.jpg`, alt: 'crop', class: 'cropped',
                           style: `width:${iw}px;height:${iw * r.h / r.w}px;` +
                                  `left:${-x0 * iw}px;top:${-y0 * iw * r.h / r.w}px`});
    return el('figure', {style: `width:${PW}px`},
              el('div', {class: 'frame crop', style: `width:${PW}px;height:${fh}px`}, img),
              el('figcaption', {text: fullFrame(box) ? 'crop = full frame (nothing cut)'
                                                     : 'crop'}));
  }

  function boxesFor(target, b) {
    if (!b) return {};
    if (target === 'aesthetic') {
      const o = {};
      if (b.aesthetic) o.aesthetic = b.aesthetic;
      if (b.average) o.average = b.average;
      return o;
    }
    if (target === 'top_tag' && b.attribute) return {attribute: b.attribute};
    return {};
  }

  function methodSection(r, rec, method) {
    const sec = el('section', {class: 'method', 'data-method': method}, el('h3', {text: method}));
    if (!rec.maps[method]) {
      const n = D.method_images[method];
      sec.append(el('p', {class: 'missing', text: `${method}: computed for the first ${n} ` +
                                                  'test image(s) only (it re-runs the model ' +
                                                  'once per feature channel).'}));
      return sec;
    }
    const q = decode(rec.maps[method]);
    const b = rec.boxes[method] || {};
    const region = regionOf(rec);
    const peak = rec.peaks ? rec.peaks[method] : null;
    const panel = (i, pw) => mapPanel(r, pw, q, i, rec.map_hw, boxesFor(D.targets[i], b),
                                      rec.empty[method][i],
                                      D.targets[i] === 'low' ? {region, peak} : null);
    // First row: image (with its region), aesthetic, low (and top tag) maps with their boxes,
    // crop; then the 10 score-bucket maps smaller.
    const ph = Math.round(PW * r.h / r.w);
    const pic = frame(r, PW, ph);
    if (region) pic.append(regionCanvas(region, PW, ph));
    const main = el('div', {class: 'panels'},
                    el('figure', {style: `width:${PW}px`}, pic,
                       el('figcaption', {text: region ? 'image and its region' : 'image'})));
    const buckets = el('div', {class: 'panels buckets'});
    D.targets.forEach((t, i) => (t.startsWith('bucket:') ? buckets.append(panel(i, PW_BUCKET))
                                                         : main.append(panel(i, PW))));
    main.append(cropPanel(r, b.average || b.aesthetic));
    sec.append(main);
    if (buckets.childElementCount) sec.append(buckets);
    return sec;
  }

  function openDetail(row) {
    const r = ROWS[row];
    const wasOpen = !$('detail').hidden;
    state.open = state.lastRow = row;
    $('detail').hidden = false;
    // The ends of the grid's order: its arrows greyed out (they did nothing, silently).
    const i = state.order.findIndex(x => x.row === row);
    $('dprev').disabled = i <= 0;
    $('dnext').disabled = i < 0 || i >= state.order.length - 1;
    document.body.style.overflow = 'hidden';
    $('detail-title').textContent = `image ${r.image_id}`;
    $('detail-info').textContent =
        `true mean score ${fmt(r.true)} (${r.label ? 'high' : 'low'}) · ${D.score_name} ` +
        `${fmt(r.pred)} (${r.pred_label ? 'high' : 'low'}) · CAM intensity ${fmt(r.intensity)} ` +
        `(global ${fmt(r.intensity_global)})` + (HAS_TAG ? ` · top tag ${r.tag}` : '') +
        ` · test row ${r.row}`;
    const body = $('detail-body');
    body.replaceChildren(el('p', {class: 'note', text: 'loading maps…'}));
    body.removeAttribute('data-ready');
    body.removeAttribute('data-error');
    const k = Math.floor(row / D.chunk_size);
    loadChunk(k).then(data => {
      if (state.open !== row) return;
      const rec = data[row];
      if (!rec) throw new Error(`maps/${k}.js has no maps for image row ${row}: damaged, or ` +
                                'from another run than this page');
      $('maphw').textContent = `${rec.map_hw[0]}x${rec.map_hw[1]}`;
      body.replaceChildren(...D.methods.map(m => methodSection(r, rec, m)));
      body.setAttribute('data-ready', String(row));
    }).catch(e => {
      if (state.open !== row) return;
      body.replaceChildren(el('p', {class: 'missing', text: String(e.message || e)}));
      body.setAttribute('data-error', String(e.message || e));
    });
    saveView();
    // Focus on close when the dialog opens; a step keeps it on the arrow pressed (it moved to
    // close, and a keyboard user's next Enter shut the dialog instead of stepping again).
    if (!wasOpen || !$('detail').contains(document.activeElement)) $('close').focus();
  }

  function closeDetail() {
    state.open = -1;
    $('detail').hidden = true;
    document.body.style.overflow = '';
    saveView();
    // Stepped past the page's edge: the grid turns to the image's page (it stayed on the old
    // one, and the focus fell to the page's top).
    const i = state.order.findIndex(r => r.row === state.lastRow);
    if (i >= 0 && Math.floor(i / pageSize()) !== state.page) {
      state.page = Math.floor(i / pageSize());
      render();
    }
    const c = document.querySelector(`.card[data-row="${state.lastRow}"]`);
    if (c) c.focus();
  }

  function step(d) {
    const i = state.order.findIndex(r => r.row === state.open);
    if (i < 0) return;
    const j = i + d;
    if (j >= 0 && j < state.order.length) openDetail(state.order[j].row);
  }

  // ---- start -------------------------------------------------------------------------------
  buildControls();
  if (D.demo) {
    $('banner').hidden = false;
    $('banner').textContent = 'DEMO DATA: synthetic images and small models trained from ' +
                              'scratch; the maps show that the pipeline works.';
  }
  $('notes').textContent = [
    `${ROWS.length} test images, ${D.arch}; maps of ${D.methods.join(', ')} for ` +
    `${D.targets.length} target(s).`].concat(D.notes || []).join(' ');
  $('region-legend').hidden = !D.regions;
  if (!HAS_TAG) {  // VGG16 draws the aesthetic box only: no legend for boxes it has not got
    $('legend-tag').hidden = true;
    $('legend-crop').textContent = 'the aesthetic box';
  }
  $('close').addEventListener('click', closeDetail);
  $('dprev').addEventListener('click', () => step(-1));
  $('dnext').addEventListener('click', () => step(1));
  $('detail').addEventListener('click', e => { if (e.target === $('detail')) closeDetail(); });
  document.addEventListener('keydown', e => {
    if ($('detail').hidden) return;
    if (e.key === 'Tab') {  // keep the focus in the open dialog
      const f = [...$('detail').querySelectorAll('button')].filter(b => !b.disabled);
      const i = f.indexOf(document.activeElement);
      if (e.shiftKey && i <= 0) { f[f.length - 1].focus(); e.preventDefault(); }
      else if (!e.shiftKey && (i < 0 || i === f.length - 1)) { f[0].focus(); e.preventDefault(); }
      return;
    }
    if (e.key === 'Escape') closeDetail();
    else if (e.key === 'ArrowLeft') step(-1);
    else if (e.key === 'ArrowRight') step(1);
  });
  loadView();
})();
