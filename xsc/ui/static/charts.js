// Small hand-drawn SVG charts for the dashboard: sparkline, line chart, depth chart, bar chart.
// No styles inline (the page's Content-Security-Policy forbids them): colours are CSS classes in app.css.
'use strict';

const Charts = (() => {
  const NS = 'http://www.w3.org/2000/svg';

  function svg(tag, attrs, children) {
    const el = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== undefined && v !== null) el.setAttribute(k, v);
    for (const c of children || []) if (c) el.appendChild(c);
    return el;
  }

  // A chart's drawing width: on a phone's width, about the width it is shown at, so its text stays legible.
  const narrowWidth = () => (window.innerWidth < 600 ? 330 : 440);

  function text(x, y, s, cls, anchor) {
    const t = svg('text', {x, y, class: cls || 'axis', 'text-anchor': anchor || 'start'});
    t.textContent = s;
    return t;
  }

  function frame(w, h, cls, label) {
    return svg('svg', {viewBox: `0 0 ${w} ${h}`, class: cls, role: 'img', 'aria-label': label || '',
                       preserveAspectRatio: cls === 'spark' ? 'none' : 'xMidYMid meet'});
  }

  // values: numbers in [0, 1] (or null: no probes in that bucket), oldest first.
  function sparkline(values, label) {
    const w = 120, h = 24, n = Math.max(values.length, 2);
    const el = frame(w, h, 'spark', label);
    el.appendChild(svg('rect', {x: 0, y: 0, width: w, height: h, class: 'spark-bg'}));
    // One path per colour (not a rect per bar): a table of sparklines stays cheap to lay out.
    const step = w / n, bw = Math.max(1, step - 0.5).toFixed(2), paths = {ok: '', warn: '', bad: ''};
    values.forEach((v, i) => {
      if (v === null || v === undefined) return;
      const bh = Math.max(2, v * (h - 2));
      paths[v >= 0.99 ? 'ok' : v >= 0.5 ? 'warn' : 'bad'] += `M${(i * step).toFixed(2)},${h}v${(-bh).toFixed(2)}h${bw}V${h}Z`;
    });
    for (const [cls, d] of Object.entries(paths)) if (d) el.appendChild(svg('path', {d, class: 'spark-' + cls}));
    return el;
  }

  function extent(values, pad) {
    let lo = Math.min(...values), hi = Math.max(...values);
    if (!isFinite(lo)) { lo = 0; hi = 1; }
    if (lo === hi) { lo -= pad || 1; hi += pad || 1; }
    return [lo, hi];
  }

  // Round tick values (1, 2 or 5 times a power of ten apart) that cover [lo, hi].
  function ticks(lo, hi, count) {
    const raw = (hi - lo) / Math.max(1, count), mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map(m => m * mag).find(s => s >= raw) || raw;
    const out = [];
    for (let v = Math.floor(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
    if (out[out.length - 1] < hi - step * 1e-9) out.push(out[out.length - 1] + step);
    return out;
  }

  // series: [{name, cls, points: [[x, y], ...], band: [[x, lo, hi], ...] (optional: a shaded range)}];
  // opts: {xfmt, yfmt, step, height}.  The legend sits above the plot, never on its line.
  function lineChart(series, opts) {
    opts = opts || {};
    const w = opts.width || narrowWidth(), h = opts.height || 200, L = 68, R = 10, T = 24, B = 24;
    const el = frame(w, h, 'chart', opts.label);
    const xs = series.flatMap(s => s.points.map(p => p[0]));
    const ys = series.flatMap(s => s.points.map(p => p[1]).concat((s.band || []).flatMap(b => [b[1], b[2]])));
    if (!xs.length) {
      el.appendChild(text(w / 2, h / 2, opts.empty || 'no data yet', 'empty', 'middle'));
      return el;
    }
    const [x0, x1] = extent(xs, 1);
    const [lo, hi] = extent(ys, Math.max(Math.abs(ys[0]) * 0.1, 1e-6));
    const yt = ticks(lo, hi, 4), y0 = yt[0], y1 = yt[yt.length - 1];
    const X = x => L + (x - x0) / (x1 - x0) * (w - L - R);
    const Y = y => T + (1 - (y - y0) / (y1 - y0)) * (h - T - B);
    el.appendChild(svg('line', {x1: L, y1: h - B, x2: w - R, y2: h - B, class: 'grid'}));
    for (const v of yt) {
      el.appendChild(svg('line', {x1: L, y1: Y(v), x2: w - R, y2: Y(v), class: 'grid'}));
      el.appendChild(text(L - 6, Y(v) + 4, (opts.yfmt || String)(v), 'axis', 'end'));
    }
    el.appendChild(text(L, h - 8, (opts.xfmt || String)(x0), 'axis', 'start'));
    el.appendChild(text(w - R, h - 8, (opts.xfmt || String)(x1), 'axis', 'end'));
    series.forEach((s, i) => {
      if (!s.points.length) return;
      if (s.band && s.band.length) {
        const top = s.band.map(b => `${X(b[0]).toFixed(1)},${Y(b[2]).toFixed(1)}`);
        const bottom = s.band.map(b => `${X(b[0]).toFixed(1)},${Y(b[1]).toFixed(1)}`).reverse();
        el.appendChild(svg('path', {d: `M${top.join('L')}L${bottom.join('L')}Z`, class: 'band ' + (s.cls || 'c' + i)}));
      }
      let d = '';
      s.points.forEach((p, j) => {
        if (j === 0) d += `M${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`;
        else if (opts.step) d += `H${X(p[0]).toFixed(1)}V${Y(p[1]).toFixed(1)}`;
        else d += `L${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`;
      });
      el.appendChild(svg('path', {d, class: 'line ' + (s.cls || 'c' + i)}));
      if (s.points.length < 60) for (const p of s.points)
        el.appendChild(svg('circle', {cx: X(p[0]).toFixed(1), cy: Y(p[1]).toFixed(1), r: 2.5, class: 'dot ' + (s.cls || 'c' + i)}));
      el.appendChild(svg('rect', {x: L + i * 160, y: 4, width: 10, height: 10, class: 'fill ' + (s.cls || 'c' + i)}));
      el.appendChild(text(L + 14 + i * 160, 13, s.name, 'legend'));
    });
    return el;
  }

  // asks, bids: [{price, quantity}]; clearing: price or null. Cumulative quantity at each price.
  function depthChart(asks, bids, clearing, opts) {
    opts = opts || {};
    const w = opts.width || narrowWidth(), h = 200, L = 56, R = 10, T = 10, B = 24;
    const el = frame(w, h, 'chart', opts.label);
    if (!asks.length && !bids.length) {
      el.appendChild(text(w / 2, h / 2, 'empty book', 'empty', 'middle'));
      return el;
    }
    const a = [...asks].sort((p, q) => p.price - q.price);
    const b = [...bids].sort((p, q) => q.price - p.price);
    const cum = list => { let t = 0; return list.map(o => [o.price, t += o.quantity]); };
    const ca = cum(a), cb = cum(b);
    const prices = [...ca, ...cb].map(p => p[0]).concat(clearing != null ? [clearing] : []);
    const [p0, p1] = extent(prices, 1);
    const qmax = Math.max(1, ...ca.map(p => p[1]), ...cb.map(p => p[1]));
    const X = p => L + (p - p0) / (p1 - p0) * (w - L - R);
    const Y = q => T + (1 - q / qmax) * (h - T - B);
    el.appendChild(svg('line', {x1: L, y1: h - B, x2: w - R, y2: h - B, class: 'grid'}));
    el.appendChild(text(L - 6, Y(qmax) + 4, (opts.qfmt || String)(qmax), 'axis', 'end'));
    el.appendChild(text(L - 6, Y(0) + 4, '0', 'axis', 'end'));
    el.appendChild(text(L, h - 8, String(p0), 'axis', 'start'));
    el.appendChild(text(w - R, h - 8, String(p1), 'axis', 'end'));
    const area = (pts, dir) => {
      if (!pts.length) return null;
      let d = `M${X(pts[0][0]).toFixed(1)},${Y(0)}`;
      for (const [p, q] of pts) d += `H${X(p).toFixed(1)}V${Y(q).toFixed(1)}`;
      d += `H${(dir > 0 ? w - R : L)}V${Y(0)}Z`;
      return d;
    };
    const da = area(ca, 1), db = area(cb, -1);
    if (da) el.appendChild(svg('path', {d: da, class: 'area asks'}));
    if (db) el.appendChild(svg('path', {d: db, class: 'area bids'}));
    if (clearing != null) {
      el.appendChild(svg('line', {x1: X(clearing), y1: T, x2: X(clearing), y2: h - B, class: 'clearing'}));
      el.appendChild(text(X(clearing) + 4, T + 22, `clears at ${clearing}`, 'legend'));
    }
    el.appendChild(svg('rect', {x: L + 8, y: T, width: 10, height: 10, class: 'fill asks'}));
    el.appendChild(text(L + 22, T + 9, 'asks', 'legend'));
    el.appendChild(svg('rect', {x: L + 70, y: T, width: 10, height: 10, class: 'fill bids'}));
    el.appendChild(text(L + 84, T + 9, 'bids', 'legend'));
    return el;
  }

  // bars: [{label, value}]
  function barChart(bars, opts) {
    opts = opts || {};
    const w = opts.width || narrowWidth(), h = 150, L = 32, R = 8, T = 10, B = 22;
    const el = frame(w, h, 'chart', opts.label);
    const max = Math.max(1, ...bars.map(b => b.value));
    const step = (w - L - R) / Math.max(1, bars.length);
    if (opts.empty && !bars.some(b => b.value)) el.appendChild(text(w / 2, (h - B) / 2, opts.empty, 'empty', 'middle'));
    el.appendChild(svg('line', {x1: L, y1: h - B, x2: w - R, y2: h - B, class: 'grid'}));
    el.appendChild(text(L - 6, T + 8, String(max), 'axis', 'end'));
    el.appendChild(text(L - 6, h - B, '0', 'axis', 'end'));
    bars.forEach((b, i) => {
      const bh = b.value / max * (h - T - B);
      el.appendChild(svg('rect', {x: (L + i * step + 1).toFixed(1), y: (h - B - bh).toFixed(1),
                                  width: Math.max(1, step - 2).toFixed(1), height: bh.toFixed(1), class: 'col'}));
    });
    if (bars.length) {
      el.appendChild(text(L, h - 6, bars[0].label, 'axis', 'start'));
      el.appendChild(text(w - R, h - 6, bars[bars.length - 1].label, 'axis', 'end'));
    }
    return el;
  }

  return {sparkline, lineChart, depthChart, barChart};
})();
