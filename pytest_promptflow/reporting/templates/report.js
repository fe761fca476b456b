"use strict";
// Adds to the server-rendered page: the failing-rows filter and the side-by-side view of two cells, where
// the prompts the two cells sent on each row are compared word by word.
(function () {
  var island = document.getElementById("promptflow-data");
  if (!island) { return; }
  var data = JSON.parse(island.textContent);
  var DIFF_CELLS = 400000;  // past this many word pairs, the differing middle of two prompts is marked whole
  var CONTEXT = 120;  // characters an unchanged stretch of a prompt keeps at each end

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined) { node.textContent = text; }  // text only: model and dataset values never become markup
    return node;
  }
  function show(value) {
    if (typeof value === "number" && !Number.isInteger(value)) { return String(Number(value.toPrecision(4))); }
    return typeof value === "string" ? value : JSON.stringify(value);
  }
  function failingScore(value) { return value === false || value === 0; }
  function pairs(values, isScore) {
    var td = el("td");
    if (values === null || typeof values !== "object") { td.textContent = values === null ? "\u2014" : show(values); return td; }
    Object.keys(values).forEach(function (key) {
      var line = el("div", isScore && failingScore(values[key]) ? "score fail" : "");
      line.appendChild(el("span", "k", key + ":"));
      line.appendChild(document.createTextNode(" " + show(values[key])));
      td.appendChild(line);
    });
    return td;
  }
  // The word-level difference of two texts as runs [op, text]: "=" in both, "-" only in a, "+" only in b.
  // A word carries the spaces after it, so that spaces alone never pass for common ground.
  function diff(a, b) {
    var x = a.match(/\S+\s*|\s+/g) || [], y = b.match(/\S+\s*|\s+/g) || [], runs = [];
    var start = 0, endX = x.length, endY = y.length;
    while (start < endX && start < endY && x[start] === y[start]) { start += 1; }
    while (endX > start && endY > start && x[endX - 1] === y[endY - 1]) { endX -= 1; endY -= 1; }
    function push(op, text) {
      var last = runs[runs.length - 1];
      if (!text) { return; }
      if (last && last[0] === op) { last[1] += text; } else { runs.push([op, text]); }
    }
    push("=", x.slice(0, start).join(""));
    var midX = x.slice(start, endX), midY = y.slice(start, endY);
    if (midX.length * midY.length > DIFF_CELLS) {
      push("-", midX.join(""));
      push("+", midY.join(""));
    } else {
      common(midX, midY).forEach(function (run) { push(run[0], run[1]); });
    }
    push("=", x.slice(endX).join(""));
    return runs;
  }
  function common(x, y) {  // a longest common subsequence of two word lists, as diff runs
    var n = x.length, m = y.length, table = [], runs = [], i, j;
    for (i = 0; i <= n; i += 1) { table.push(new Uint32Array(m + 1)); }
    for (i = n - 1; i >= 0; i -= 1) {
      for (j = m - 1; j >= 0; j -= 1) {
        table[i][j] = x[i] === y[j] ? table[i + 1][j + 1] + 1 : Math.max(table[i + 1][j], table[i][j + 1]);
      }
    }
    for (i = 0, j = 0; i < n || j < m;) {
      if (i < n && j < m && x[i] === y[j]) { runs.push(["=", x[i]]); i += 1; j += 1; }
      else if (j >= m || (i < n && table[i + 1][j] >= table[i][j + 1])) { runs.push(["-", x[i]]); i += 1; }
      else { runs.push(["+", y[j]]); j += 1; }
    }
    return runs;
  }
  function unchanged(text) {  // a stretch both prompts share: long ones keep only their ends
    if (text.length <= 2 * CONTEXT + 40) { return document.createTextNode(text); }
    var span = el("span", "", text.slice(0, CONTEXT));
    span.appendChild(el("span", "elided", " \u2026 " + (text.length - 2 * CONTEXT) + " unchanged characters \u2026 "));
    span.appendChild(document.createTextNode(text.slice(-CONTEXT)));
    return span;
  }
  function promptSide(runs, mine) {  // mine: "-" for the first cell's prompt, "+" for the second's
    var td = el("td", "prompt");
    td.colSpan = 2;
    runs.forEach(function (run) {
      if (run[0] === "=") { td.appendChild(unchanged(run[1])); }
      else if (run[0] === mine) { td.appendChild(el(mine === "-" ? "del" : "ins", "", run[1])); }
    });
    return td;
  }

  function outputs(row) {
    var td = pairs(row.outputs, false);
    if (row.error) { td.appendChild(el("div", "fail", row.error)); }
    return td;
  }

  document.querySelectorAll("section.flow").forEach(function (section) {
    var cells = data.flows[Number(section.getAttribute("data-index"))].cells;
    var only = section.querySelector("input.only-failing");
    var a = section.querySelector("select.cell-a");
    var b = section.querySelector("select.cell-b");
    var view = section.querySelector(".side-by-side");
    section.querySelectorAll("[data-js]").forEach(function (node) { node.hidden = false; });

    function sameDataset() {
      var dataset = cells[a.value].dataset;
      Array.prototype.forEach.call(b.options, function (option) {
        option.disabled = option.value === a.value || cells[option.value].dataset !== dataset;
      });
      if (b.selectedOptions[0].disabled) {
        var first = Array.prototype.find.call(b.options, function (option) { return !option.disabled; });
        if (first) { b.value = first.value; }
      }
    }

    function compare() {
      var left = cells[a.value], right = cells[b.value];
      view.textContent = "";
      if (a.value === b.value || left.dataset !== right.dataset) {
        view.appendChild(el("p", "muted", "Pick two different cells on the same dataset."));
        return;
      }
      var byIndex = {};
      right.rows.forEach(function (row) { byIndex[row.index] = row; });
      var table = el("table", "rows compare"), thead = table.appendChild(el("thead")), shown = 0, differing = 0;
      var prompted = 0, reworded = 0;
      var top = thead.appendChild(el("tr")), sub = thead.appendChild(el("tr"));
      ["#", "data"].forEach(function (title) { top.appendChild(el("th", "", title)).rowSpan = 2; });
      [left, right].forEach(function (cell) {
        top.appendChild(el("th", "", cell.label)).colSpan = 2;
        sub.appendChild(el("th", "", "outputs"));
        sub.appendChild(el("th", "", "scores"));
      });
      var body = table.appendChild(el("tbody"));
      left.rows.forEach(function (mine) {
        var theirs = byIndex[mine.index];
        if (!theirs) { return; }
        var differs = JSON.stringify(mine.outputs) !== JSON.stringify(theirs.outputs) || mine.error !== theirs.error;
        differing += differs ? 1 : 0;
        prompted += mine.prompt || theirs.prompt ? 1 : 0;
        reworded += mine.prompt !== theirs.prompt ? 1 : 0;
        if (only.checked && !mine.failing && !theirs.failing) { return; }
        shown += 1;
        var tr = body.appendChild(el("tr", "row" + (mine.failing || theirs.failing ? " failing" : "")));
        tr.appendChild(el("td", "num", String(mine.index)));
        tr.appendChild(pairs(mine.data, false));
        [mine, theirs].forEach(function (row) {
          var td = tr.appendChild(outputs(row));
          if (differs) { td.classList.add("differs"); }
          tr.appendChild(pairs(row.scores, true));
        });
        if (mine.prompt || theirs.prompt) {
          var runs = diff(mine.prompt || "", theirs.prompt || "");
          var sent = body.appendChild(el("tr", "prompts" + (mine.prompt !== theirs.prompt ? " differs" : "")));
          sent.appendChild(el("td", "k", mine.prompt !== theirs.prompt ? "prompt sent (differences marked)"
                                                                         : "prompt sent (the same)")).colSpan = 2;
          sent.appendChild(promptSide(runs, "-"));
          sent.appendChild(promptSide(runs, "+"));
        }
      });
      var prompts = prompted ? ", " + reworded + " with different prompts" : "";
      view.appendChild(el("p", "muted", left.rows.length + " rows, " + differing + " with different outputs" + prompts +
                          "; showing " + shown + (only.checked ? " failing in either cell" : "")));
      view.appendChild(el("div", "scroll")).appendChild(table);
    }

    function filter() {
      section.querySelectorAll("table.rows tr.row, table.rows tr.transcript").forEach(function (tr) {
        tr.hidden = only.checked && !tr.classList.contains("failing");
      });
      if (a) { compare(); }
    }

    only.addEventListener("change", filter);
    if (a) {
      a.addEventListener("change", function () { sameDataset(); compare(); });
      b.addEventListener("change", compare);
      sameDataset();
    }
    filter();
  });
})();
