// odbench report: the per-image table (sort, filter, paginate) and the paired scatter plot.
// Written for odbench; no library.  Data: the JSON in <script id="odb-data">: per-method
// columns D.columns ([key, label]: values D[key][method][image]; the first one is compared by
// the difference column and the scatter; an optional third entry: decimals, 3 by default),
// columns shared by the methods D.common (D[key][image]).
"use strict";
(function () {
  const D = JSON.parse(document.getElementById("odb-data").textContent);
  const M = D.methods.length, N = D.ids.length, PAGE = 50;
  const [K0, L0] = D.columns[0];
  const pa = document.getElementById("pa"), pb = document.getElementById("pb");
  const ex = document.getElementById("extra"); // per-image S, Eξ, wFβ... when stored
  if (pb) pb.value = "1";
  const st = { key: null, dir: 1, filter: "", page: 0, rows: D.ids.map((_, i) => i) };

  // Columns: [key, header, value(i), decimals]; missing values (null) always sort last.
  function columns() {
    const cols = [["id", "id", (i) => D.ids[i]]];
    for (const [key, label, d] of D.common || []) cols.push([key, label, (i) => D[key][i], d]);
    for (let m = 0; m < M; m++) {
      for (const [key, label, d] of D.columns) {
        cols.push([key + m, label + " " + D.methods[m], (i) => D[key][m][i], d]);
      }
      if (ex && ex.value) {
        const key = ex.value;
        cols.push([key + m, D.extraLabels[key] + " " + D.methods[m], (i) => D.extra[key][m][i]]);
      }
    }
    if (pa && pb) {
      const a = +pa.value, b = +pb.value;
      const v = D[K0];
      cols.push(["diff", L0 + " " + D.methods[b] + " − " + D.methods[a], (i) =>
        v[a][i] === null || v[b][i] === null ? null : v[b][i] - v[a][i]]);
    }
    return cols;
  }

  function compare(value, dir) {
    return (i, j) => {
      const x = value(i), y = value(j);
      if (x === null || y === null) return x === y ? i - j : x === null ? 1 : -1;
      if (x < y) return -dir;
      if (x > y) return dir;
      return i - j; // ties: dataset order
    };
  }

  function update() {
    const cols = columns();
    const f = st.filter.toLowerCase();
    let rows = D.ids.map((_, i) => i);
    if (f) rows = rows.filter((i) => D.ids[i].toLowerCase().includes(f));
    const col = cols.find((c) => c[0] === st.key);
    if (col) rows.sort(compare(col[2], st.dir));
    st.rows = rows;
    const pages = Math.max(1, Math.ceil(rows.length / PAGE));
    st.page = Math.min(st.page, pages - 1);
    render(cols, pages);
  }

  function cell(v, digits) {
    return v === null ? "–" : typeof v === "number" ? v.toFixed(digits ?? 3) : v;
  }

  function render(cols, pages) {
    const thead = document.querySelector("#pi thead"), tbody = document.querySelector("#pi tbody");
    const tr = document.createElement("tr");
    tr.appendChild(document.createElement("th")).textContent = "";
    for (const [key, label] of cols) {
      const th = tr.appendChild(document.createElement("th"));
      th.textContent = label;
      th.dataset.key = key;
      th.title = "sort (click again to reverse)";
      if (key === st.key) th.setAttribute("aria-sort", st.dir > 0 ? "ascending" : "descending");
      th.addEventListener("click", () => {
        st.dir = st.key === key ? -st.dir : 1; // first click: lowest (worst) first
        st.key = key;
        st.page = 0;
        update();
      });
    }
    thead.replaceChildren(tr);
    const start = st.page * PAGE;
    const html = [];
    for (const i of st.rows.slice(start, start + PAGE)) {
      const img = D.thumbs[i] ? `<img src="${D.thumbs[i]}" alt="">` : "";
      const thumb = D.anchors[i] ? `<a href="#${D.anchors[i]}" title="show in the grids">${img}</a>` : img;
      const tds = cols.map(([key, , value, digits], k) => {
        const v = value(i);
        const cls = key === "diff" && v !== null ? (v < 0 ? "neg" : v > 0 ? "pos" : "") : "";
        return `<td class="${cls}">${k === 0 ? escapeHtml(v) : cell(v, digits)}</td>`;
      });
      html.push(`<tr data-index="${i}"><td>${thumb}</td>${tds.join("")}</tr>`);
    }
    tbody.innerHTML = html.join("");
    document.getElementById("count").textContent = `${st.rows.length} of ${N} images`;
    document.getElementById("page").textContent = ` page ${st.page + 1} / ${pages} `;
    document.getElementById("prev").disabled = st.page === 0;
    document.getElementById("next").disabled = st.page >= pages - 1;
  }

  function escapeHtml(s) {
    return String(s).replace(/[&<>"']/g, (c) => "&#" + c.charCodeAt(0) + ";");
  }

  function scatter() {
    const svg = document.getElementById("scatter");
    if (!svg || !pa || !pb) return;
    const a = +pa.value, b = +pb.value, S = 340, P = 36, W = S - P - 10;
    const x = (v) => P + v * W, y = (v) => S - P - v * W;
    const out = [
      `<line x1="${x(0)}" y1="${y(0)}" x2="${x(1)}" y2="${y(1)}" stroke="#bbb"/>`,
      `<line x1="${x(0)}" y1="${y(0)}" x2="${x(1)}" y2="${y(0)}" class="ax"/>`,
      `<line x1="${x(0)}" y1="${y(0)}" x2="${x(0)}" y2="${y(1)}" class="ax"/>`,
      `<text x="${x(0.5)}" y="${S - 6}" class="lbl">${escapeHtml(L0 + " " + D.methods[a])} (A)</text>`,
      `<text x="12" y="${y(0.5)}" class="lbl" transform="rotate(-90 12 ${y(0.5)})">` +
        `${escapeHtml(L0 + " " + D.methods[b])} (B)</text>`,
    ];
    for (const t of [0, 0.5, 1]) {
      out.push(`<text x="${x(t)}" y="${y(0) + 14}" class="tick">${t}</text>`);
      out.push(`<text x="${x(0) - 4}" y="${y(t) + 4}" class="tick" text-anchor="end">${t}</text>`);
    }
    for (let i = 0; i < N; i++) {
      const u = D[K0][a][i], v = D[K0][b][i];
      if (u === null || v === null) continue;
      out.push(`<circle cx="${x(u).toFixed(1)}" cy="${y(v).toFixed(1)}" r="2.5" ` +
        `data-i="${i}" fill="${D.colours[b]}" fill-opacity="0.5"><title>` +
        `${escapeHtml(D.ids[i])}: ${u.toFixed(3)} → ${v.toFixed(3)}</title></circle>`);
    }
    svg.innerHTML = out.join("");
  }

  document.getElementById("filter").addEventListener("input", (e) => {
    st.filter = e.target.value;
    st.page = 0;
    update();
  });
  document.getElementById("prev").addEventListener("click", () => { st.page--; update(); });
  document.getElementById("next").addEventListener("click", () => { st.page++; update(); });
  for (const sel of [pa, pb]) {
    if (sel) sel.addEventListener("change", () => { update(); scatter(); });
  }
  if (ex) ex.addEventListener("change", update);
  const sv = document.getElementById("scatter");
  if (sv) sv.addEventListener("click", (e) => {
    const i = e.target.dataset && e.target.dataset.i;
    if (i === undefined) return;
    const box = document.getElementById("filter");
    box.value = D.ids[+i];
    box.dispatchEvent(new Event("input"));
    document.getElementById("images").scrollIntoView();
  });
  // A link to a grid row opens the folded grid that holds it.
  document.querySelector("#pi tbody").addEventListener("click", (e) => {
    const a = e.target.closest("a[href^='#g']");
    if (!a) return;
    const row = document.getElementById(a.getAttribute("href").slice(1));
    if (!row) return;
    e.preventDefault();
    row.closest("details").open = true;
    row.scrollIntoView();
  });
  update();
  scatter();
})();
