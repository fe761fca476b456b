"use strict";
// Adds to the server-rendered page: the failing-rows filter and the side-by-side view of two cells.
(function () {
  var island = document.getElementById("promptflow-data");
  if (!island) { return; }
  var data = JSON.parse(island.textContent);

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
      });
      view.appendChild(el("p", "muted", left.rows.length + " rows, " + differing + " with different outputs; showing " +
                          shown + (only.checked ? " failing in either cell" : "")));
      view.appendChild(el("div", "scroll")).appendChild(table);
    }

    function filter() {
      section.querySelectorAll("table.rows tr.row").forEach(function (tr) {
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
