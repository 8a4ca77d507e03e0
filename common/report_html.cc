#include "report_html.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <vector>

#include <google/protobuf/util/json_util.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace qopt {
namespace {

using json = nlohmann::json;

constexpr const char* kPalette[] = {"#3b6fb6", "#e07b39", "#4a9c5d", "#b5475c", "#7d5ba6", "#8c6d46"};

constexpr const char* kStyle = R"(
body{font:14px/1.45 system-ui,-apple-system,"DejaVu Sans",sans-serif;margin:0;color:#1d2330;background:#f5f6f8}
header{background:#1d2f4f;color:#fff;padding:18px 28px}header h1{margin:0 0 4px;font-size:22px}
header .meta{opacity:.85;font-size:13px}main{padding:8px 28px 40px;max-width:1280px}
section{background:#fff;border:1px solid #dde1e7;border-radius:6px;margin:18px 0;padding:14px 18px}
h2{font-size:18px;margin:0 0 8px}h3{font-size:15px;margin:16px 0 6px}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0}
th,td{border-bottom:1px solid #e6e9ee;padding:3px 8px;text-align:right;white-space:nowrap}
th{background:#f0f2f5;position:sticky;top:0}td:first-child,th:first-child{text-align:left}
.figures{display:flex;flex-wrap:wrap;gap:8px}.figure{background:#f0f3f8;border-radius:4px;padding:6px 10px;min-width:110px}
.figure .k{font-size:11px;color:#5b6577}.figure .v{font-size:16px;font-weight:600}
.grid{display:flex;flex-wrap:wrap;gap:10px}.grid svg{background:#fafbfc;border:1px solid #eceef2;border-radius:4px}
.scroll{max-height:480px;overflow:auto}pre{background:#f0f2f5;padding:8px;overflow:auto;font-size:12px;max-height:320px}
svg text{font-family:system-ui,"DejaVu Sans",sans-serif}.note{color:#5b6577;font-size:12.5px}
)";

std::string Num(double v) {
  if (std::isnan(v)) return "–";
  if (std::isinf(v)) return v > 0 ? "∞" : "-∞";
  if (v != 0 && (std::fabs(v) >= 1e6 || std::fabs(v) < 1e-3)) return absl::StrFormat("%.3g", v);
  return absl::StrFormat("%.4g", v);
}

std::string Id(int step, const std::string& what) { return absl::StrCat("step-", step, "-", what); }

// Axis range covering `values`, padded; never empty.
std::pair<double, double> Range(const std::vector<double>& values, bool include_zero) {
  double lo = include_zero ? 0.0 : INFINITY, hi = include_zero ? 0.0 : -INFINITY;
  for (double v : values) {
    if (!std::isfinite(v)) continue;
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  if (!std::isfinite(lo)) return {0.0, 1.0};
  if (hi <= lo) hi = lo + (lo == 0 ? 1.0 : std::fabs(lo) * 0.1);
  const double pad = (hi - lo) * 0.05;
  return {include_zero && lo == 0 ? 0.0 : lo - pad, hi + pad};
}

struct Bars {
  std::string name;
  std::vector<double> values;  // one per row
};

struct RefLine {
  std::string name;
  double value;
};

// Horizontal bars, one row per label, one bar per series.
std::string BarChart(const std::string& id, const std::string& title, const std::vector<std::string>& labels,
                     const std::vector<Bars>& series, const std::vector<RefLine>& refs, bool include_zero) {
  const int label_w = 200, plot_w = 460, bar_h = 7, gap = 5;
  const int row_h = static_cast<int>(series.size()) * bar_h + gap;
  const int top = 38, height = top + static_cast<int>(labels.size()) * row_h + 26;
  std::vector<double> all;
  for (const Bars& b : series) all.insert(all.end(), b.values.begin(), b.values.end());
  for (const RefLine& r : refs) all.push_back(r.value);
  const auto [lo, hi] = Range(all, include_zero);
  auto x = [&, lo = lo, hi = hi](double v) { return label_w + (std::clamp(v, lo, hi) - lo) / (hi - lo) * plot_w; };
  std::string s = absl::StrFormat(R"(<svg id="%s" width="%d" height="%d" role="img"><title>%s</title>)", id,
                                  label_w + plot_w + 20, height, HtmlEscape(title));
  absl::StrAppendFormat(&s, R"(<text x="4" y="15" font-size="13" font-weight="600">%s</text>)", HtmlEscape(title));
  int lx = label_w;
  for (size_t k = 0; k < series.size(); ++k) {
    absl::StrAppendFormat(&s, R"(<rect x="%d" y="22" width="10" height="8" fill="%s"/><text x="%d" y="30" font-size="11">%s</text>)",
                          lx, kPalette[k % 6], lx + 13, HtmlEscape(series[k].name));
    lx += 20 + 7 * static_cast<int>(series[k].name.size());
  }
  for (size_t r = 0; r < labels.size(); ++r) {
    const int y = top + static_cast<int>(r) * row_h;
    std::string label = labels[r].size() > 30 ? "…" + labels[r].substr(labels[r].size() - 29) : labels[r];
    absl::StrAppendFormat(&s, R"(<text x="%d" y="%d" font-size="11" text-anchor="end">%s<title>%s</title></text>)",
                          label_w - 6, y + row_h - gap / 2 - 2, HtmlEscape(label), HtmlEscape(labels[r]));
    for (size_t k = 0; k < series.size(); ++k) {
      const double v = r < series[k].values.size() ? series[k].values[r] : NAN;
      if (std::isnan(v)) continue;
      const double x0 = x(include_zero ? std::max(0.0, lo) : lo), x1 = x(v);
      absl::StrAppendFormat(&s, R"(<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s"><title>%s: %s</title></rect>)",
                            std::min(x0, x1), y + static_cast<int>(k) * bar_h, std::max(0.5, std::fabs(x1 - x0)), bar_h - 1,
                            kPalette[k % 6], HtmlEscape(series[k].name), Num(v));
    }
  }
  const int bottom = top + static_cast<int>(labels.size()) * row_h;
  for (size_t k = 0; k < refs.size(); ++k) {
    const double rx = x(refs[k].value);
    absl::StrAppendFormat(&s, R"(<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#222" stroke-dasharray="4 3"/>)", rx, top - 4,
                          rx, bottom);
    absl::StrAppendFormat(&s, R"(<text x="%.1f" y="%d" font-size="10" text-anchor="middle">%s %s</text>)", rx,
                          bottom + 12 + 10 * static_cast<int>(k % 2), HtmlEscape(refs[k].name), Num(refs[k].value));
  }
  absl::StrAppendFormat(&s, R"(<text x="%d" y="%d" font-size="10">%s</text><text x="%d" y="%d" font-size="10" text-anchor="end">%s</text>)",
                        label_w, height - 2, Num(lo), label_w + plot_w, height - 2, Num(hi));
  return s + "</svg>";
}

struct Frame {
  int w = 300, h = 170, left = 46, right = 10, top = 24, bottom = 24;
  double x0 = 0, x1 = 1, y0 = 0, y1 = 1;
  double X(double v) const { return left + (v - x0) / (x1 - x0) * (w - left - right); }
  double Y(double v) const { return h - bottom - (v - y0) / (y1 - y0) * (h - top - bottom); }
};

std::string OpenFrame(const std::string& title, const Frame& f) {
  std::string s = absl::StrFormat(R"(<svg width="%d" height="%d" role="img"><title>%s</title>)", f.w, f.h, HtmlEscape(title));
  std::string shown = title.size() > 44 ? "…" + title.substr(title.size() - 43) : title;
  absl::StrAppendFormat(&s, R"(<text x="4" y="14" font-size="11.5" font-weight="600">%s</text>)", HtmlEscape(shown));
  absl::StrAppendFormat(&s, R"(<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#c9ced6"/>)", f.left, f.top,
                        f.w - f.left - f.right, f.h - f.top - f.bottom);
  absl::StrAppendFormat(&s, R"(<text x="%d" y="%d" font-size="9.5" text-anchor="end">%s</text>)", f.left - 3, f.top + 8, Num(f.y1));
  absl::StrAppendFormat(&s, R"(<text x="%d" y="%d" font-size="9.5" text-anchor="end">%s</text>)", f.left - 3, f.h - f.bottom,
                        Num(f.y0));
  absl::StrAppendFormat(&s, R"(<text x="%d" y="%d" font-size="9.5">%s</text>)", f.left, f.h - 8, Num(f.x0));
  absl::StrAppendFormat(&s, R"(<text x="%d" y="%d" font-size="9.5" text-anchor="end">%s</text>)", f.w - f.right, f.h - 8,
                        Num(f.x1));
  return s;
}

// Lines of y over x.
std::string LineChart(const std::string& title, const std::vector<const v1::Series*>& lines) {
  Frame f;
  std::vector<double> xs, ys;
  for (const v1::Series* l : lines) {
    xs.insert(xs.end(), l->x().begin(), l->x().end());
    ys.insert(ys.end(), l->y().begin(), l->y().end());
  }
  std::tie(f.x0, f.x1) = Range(xs, false);
  std::tie(f.y0, f.y1) = Range(ys, false);
  std::string s = OpenFrame(title, f);
  for (size_t k = 0; k < lines.size(); ++k) {
    std::vector<std::string> points;
    const int n = std::min(lines[k]->x_size(), lines[k]->y_size());
    for (int i = 0; i < n; ++i) {
      if (std::isfinite(lines[k]->y(i))) points.push_back(absl::StrFormat("%.1f,%.1f", f.X(lines[k]->x(i)), f.Y(lines[k]->y(i))));
    }
    absl::StrAppendFormat(&s, R"(<polyline fill="none" stroke="%s" stroke-width="1.6" points="%s"/>)", kPalette[k % 6],
                          absl::StrJoin(points, " "));
    if (n == 1 && !points.empty()) {
      absl::StrAppendFormat(&s, R"(<circle r="3" fill="%s" cx="%s"/>)", kPalette[k % 6], points[0].substr(0, points[0].find(',')));
    }
  }
  return s + "</svg>";
}

// Vertical bars of counts over bin centres.
std::string HistogramChart(const std::string& title, const v1::Series& h) {
  Frame f;
  std::vector<double> xs(h.x().begin(), h.x().end()), ys(h.y().begin(), h.y().end());
  const double width = xs.size() > 1 ? xs[1] - xs[0] : 1.0;
  f.x0 = xs.empty() ? 0 : xs.front() - width / 2;
  f.x1 = xs.empty() ? 1 : xs.back() + width / 2;
  f.y0 = 0;
  f.y1 = std::max(1.0, ys.empty() ? 1.0 : *std::max_element(ys.begin(), ys.end()));
  std::string s = OpenFrame(title, f);
  for (size_t i = 0; i < xs.size() && i < ys.size(); ++i) {
    const double x0 = f.X(xs[i] - width / 2), x1 = f.X(xs[i] + width / 2);
    absl::StrAppendFormat(&s, R"(<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>)", x0, f.Y(ys[i]),
                          std::max(0.5, x1 - x0 - 0.3), f.Y(0) - f.Y(ys[i]), kPalette[0]);
  }
  if (f.x0 < 0 && f.x1 > 0) {
    absl::StrAppendFormat(&s, R"(<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#b5475c" stroke-width="0.8"/>)", f.X(0), f.X(0),
                          f.top, f.h - f.bottom);
  }
  return s + "</svg>";
}

// Each channel's range as a vertical line from its min to its max.
std::string RangeChart(const std::string& title, const v1::Series& mins, const v1::Series& maxs,
                       const v1::Series* mins_after = nullptr, const v1::Series* maxs_after = nullptr) {
  Frame f;
  f.w = 340;
  std::vector<double> ys(mins.y().begin(), mins.y().end());
  ys.insert(ys.end(), maxs.y().begin(), maxs.y().end());
  if (mins_after && maxs_after) {
    ys.insert(ys.end(), mins_after->y().begin(), mins_after->y().end());
    ys.insert(ys.end(), maxs_after->y().begin(), maxs_after->y().end());
  }
  f.x0 = -0.5;
  f.x1 = std::max(1, mins.y_size()) - 0.5;
  std::tie(f.y0, f.y1) = Range(ys, true);
  std::string s = OpenFrame(title, f);
  auto draw = [&](const v1::Series& lo, const v1::Series& hi, const char* color, double shift) {
    for (int c = 0; c < std::min(lo.y_size(), hi.y_size()); ++c) {
      const double x = f.X(c + shift);
      absl::StrAppendFormat(&s, R"(<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="%s" stroke-width="%.1f"/>)", x, x,
                            f.Y(lo.y(c)), f.Y(hi.y(c)), color, std::clamp(200.0 / lo.y_size(), 0.6, 5.0));
    }
  };
  const bool both = mins_after && maxs_after;
  draw(mins, maxs, kPalette[0], both ? -0.2 : 0.0);
  if (both) draw(*mins_after, *maxs_after, kPalette[1], 0.2);
  absl::StrAppendFormat(&s, R"(<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#888" stroke-width="0.6"/>)", f.left, f.w - f.right,
                        f.Y(0), f.Y(0));
  return s + "</svg>";
}

std::string FiguresBlock(const google::protobuf::Map<std::string, double>& figures) {
  std::map<std::string, double> sorted(figures.begin(), figures.end());
  std::string s = R"(<div class="figures">)";
  for (const auto& [k, v] : sorted) {
    absl::StrAppendFormat(&s, R"(<div class="figure"><div class="k">%s</div><div class="v">%s</div></div>)", HtmlEscape(k), Num(v));
  }
  return s + "</div>";
}

std::string LayerTable(const std::string& id, const v1::StepReport& step) {
  std::vector<std::string> labels, figures;
  std::set<std::string> seen_labels, seen_figures;
  for (const v1::LayerRow& row : step.layers()) {
    for (const auto& [k, v] : std::map<std::string, std::string>(row.labels().begin(), row.labels().end())) {
      if (seen_labels.insert(k).second) labels.push_back(k);
    }
    for (const auto& [k, v] : std::map<std::string, double>(row.figures().begin(), row.figures().end())) {
      if (seen_figures.insert(k).second) figures.push_back(k);
    }
  }
  std::string s = absl::StrFormat(R"(<div class="scroll"><table id="%s"><thead><tr><th>layer</th>)", id);
  for (const std::string& k : labels) absl::StrAppend(&s, "<th>", HtmlEscape(k), "</th>");
  for (const std::string& k : figures) absl::StrAppend(&s, "<th>", HtmlEscape(k), "</th>");
  s += "</tr></thead><tbody>";
  for (const v1::LayerRow& row : step.layers()) {
    absl::StrAppend(&s, "<tr><td>", HtmlEscape(row.layer()), "</td>");
    for (const std::string& k : labels) {
      auto it = row.labels().find(k);
      absl::StrAppend(&s, "<td>", it == row.labels().end() ? "" : HtmlEscape(it->second), "</td>");
    }
    for (const std::string& k : figures) {
      auto it = row.figures().find(k);
      absl::StrAppend(&s, "<td>", it == row.figures().end() ? "" : Num(it->second), "</td>");
    }
    s += "</tr>";
  }
  return s + "</tbody></table></div>";
}

double Figure(const v1::LayerRow& row, const std::string& key) {
  auto it = row.figures().find(key);
  return it == row.figures().end() ? NAN : it->second;
}

double Figure(const v1::StepReport& step, const std::string& key) {
  auto it = step.figures().find(key);
  return it == step.figures().end() ? NAN : it->second;
}

json Details(const v1::StepReport& step) {
  if (!step.has_details()) return json::object();
  std::string text;
  if (!google::protobuf::util::MessageToJsonString(step.details(), &text).ok()) return json::object();
  json js = json::parse(text, nullptr, false);
  return js.is_discarded() ? json::object() : js;
}

// The analysis: sensitivity and output SQNR per group, weight ranges and histograms.
std::string AnalysisViews(const v1::StepReport& step, std::set<std::string>& shown_series) {
  const json details = Details(step);
  const std::string score = details.value("score", "score");
  std::vector<std::string> labels;
  Bars enabled{"only this group quantized", {}}, disabled{"only this group in float", {}}, sqnr{"output SQNR (dB)", {}};
  for (const v1::LayerRow& row : step.layers()) {
    labels.push_back(row.layer());
    enabled.values.push_back(Figure(row, "only_enabled"));
    disabled.values.push_back(Figure(row, "only_disabled"));
    sqnr.values.push_back(Figure(row, "output_sqnr_db"));
  }
  const int i = step.index();
  std::string s;
  std::vector<RefLine> refs;
  if (!std::isnan(Figure(step, "fp32"))) refs.push_back({"fp32", Figure(step, "fp32")});
  refs.push_back({"quantized", Figure(step, "quantized")});
  const bool per_layer = std::any_of(enabled.values.begin(), enabled.values.end(), [](double v) { return !std::isnan(v); });
  absl::StrAppendFormat(&s, R"(<h3>Per-layer sensitivity (%s)</h3><div class="scroll" id="%s">)", HtmlEscape(score),
                        Id(i, "sensitivity"));
  if (per_layer) {
    s += BarChart(Id(i, "sensitivity-chart"), absl::StrCat(score, " with one quantizer group switched"), labels,
                  {enabled, disabled}, refs, false);
  } else {
    s += R"(<p class="note">Per-layer scores were not computed (per_layer: false).</p>)";
  }
  s += "</div>";
  absl::StrAppendFormat(&s, R"(<h3>Output SQNR per layer</h3><div class="scroll" id="%s">)", Id(i, "sqnr"));
  s += BarChart(Id(i, "sqnr-chart"), "SQNR of each group's output in the simulation vs FP32 (dB)", labels, {sqnr}, {}, true);
  s += "</div>";

  std::map<std::string, const v1::Series*> by_name;
  for (const v1::Series& series : step.series()) by_name[series.name()] = &series;
  std::string ranges, histograms;
  for (const v1::LayerRow& row : step.layers()) {
    const std::string& layer = row.layer();
    auto lo = by_name.find(layer + " weight min per channel"), hi = by_name.find(layer + " weight max per channel");
    if (lo != by_name.end() && hi != by_name.end()) {
      ranges += RangeChart(layer + " weight range per output channel", *lo->second, *hi->second);
      shown_series.insert({lo->first, hi->first});
    }
    for (const char* kind : {" weight histogram", " output histogram"}) {
      auto h = by_name.find(layer + kind);
      if (h == by_name.end()) continue;
      histograms += HistogramChart(layer + kind, *h->second);
      shown_series.insert(h->first);
    }
  }
  absl::StrAppendFormat(&s, R"(<h3>Weight ranges per output channel</h3><div class="grid" id="%s">%s</div>)",
                        Id(i, "weight-ranges"), ranges);
  absl::StrAppendFormat(&s, R"(<h3>Histograms</h3><div class="grid" id="%s">%s</div>)", Id(i, "histograms"), histograms);
  return s;
}

// Cross-layer equalization: each equalized layer's weight ranges before and after.
std::string EqualizationViews(const v1::StepReport& step, std::set<std::string>& shown_series) {
  std::map<std::string, const v1::Series*> by_name;
  for (const v1::Series& series : step.series()) by_name[series.name()] = &series;
  std::string charts;
  for (const auto& [name, series] : by_name) {
    const std::string suffix = " weight min per channel before";
    if (name.size() <= suffix.size() || name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) continue;
    const std::string layer = name.substr(0, name.size() - suffix.size());
    const std::string keys[] = {layer + " weight max per channel before", layer + " weight min per channel after",
                                layer + " weight max per channel after"};
    if (!by_name.count(keys[0]) || !by_name.count(keys[1]) || !by_name.count(keys[2])) continue;
    charts += RangeChart(layer + " (blue before, orange after)", *series, *by_name[keys[0]], by_name[keys[1]], by_name[keys[2]]);
    shown_series.insert({name, keys[0], keys[1], keys[2]});
  }
  if (charts.empty()) return "";
  return absl::StrFormat(R"(<h3>Weight ranges per output channel, before and after equalization</h3><div class="grid" id="%s">%s</div>)",
                         Id(step.index(), "equalized-ranges"), charts);
}

// Mixed precision: the pareto curve of score against relative bit-ops, with the target
// and the chosen mix marked.
std::string ParetoView(const v1::StepReport& step, std::set<std::string>& shown_series) {
  const v1::Series* curve = nullptr;
  for (const v1::Series& series : step.series()) {
    if (series.name() == "pareto") curve = &series;
  }
  if (curve == nullptr) return "";
  shown_series.insert(curve->name());
  const std::string score = Details(step).value("score", "score");
  const double target = Figure(step, "target"), chosen_x = Figure(step, "chosen_relative_bitops"),
               chosen_y = Figure(step, "chosen_score");
  Frame f;
  f.w = 560;
  f.h = 300;
  f.left = 56;
  f.bottom = 30;
  std::vector<double> xs(curve->x().begin(), curve->x().end()), ys(curve->y().begin(), curve->y().end());
  ys.push_back(target);
  std::tie(f.x0, f.x1) = Range(xs, false);
  std::tie(f.y0, f.y1) = Range(ys, false);
  std::string s = OpenFrame(absl::StrCat(score, " against bit-ops relative to the start"), f);
  std::vector<std::string> points;
  const int n = std::min(curve->x_size(), curve->y_size());
  for (int k = 0; k < n; ++k) points.push_back(absl::StrFormat("%.1f,%.1f", f.X(curve->x(k)), f.Y(curve->y(k))));
  absl::StrAppendFormat(&s, R"(<polyline fill="none" stroke="%s" stroke-width="1.6" points="%s"/>)", kPalette[0],
                        absl::StrJoin(points, " "));
  for (int k = 0; k < n; ++k) {
    absl::StrAppendFormat(&s, R"(<circle r="3.5" cx="%.1f" cy="%.1f" fill="%s"><title>bit-ops %s: %s %s</title></circle>)",
                          f.X(curve->x(k)), f.Y(curve->y(k)), kPalette[0], Num(curve->x(k)), HtmlEscape(score),
                          Num(curve->y(k)));
  }
  if (std::isfinite(target)) {
    absl::StrAppendFormat(&s, R"(<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#b5475c" stroke-dasharray="5 3"/>)", f.left,
                          f.w - f.right, f.Y(target), f.Y(target));
    absl::StrAppendFormat(&s, R"(<text x="%d" y="%.1f" font-size="10" text-anchor="end" fill="#b5475c">target %s</text>)",
                          f.w - f.right - 2, f.Y(target) - 3, Num(target));
  }
  if (std::isfinite(chosen_x) && std::isfinite(chosen_y)) {
    absl::StrAppendFormat(&s,
                          R"(<circle r="6" cx="%.1f" cy="%.1f" fill="none" stroke="%s" stroke-width="2"><title>chosen: bit-ops %s, %s %s</title></circle>)",
                          f.X(chosen_x), f.Y(chosen_y), kPalette[1], Num(chosen_x), HtmlEscape(score), Num(chosen_y));
  }
  absl::StrAppendFormat(&s, R"(<text x="%d" y="%d" font-size="10" text-anchor="middle">relative bit-ops</text>)",
                        (f.left + f.w - f.right) / 2, f.h - 8);
  s += "</svg>";
  return absl::StrFormat(
      R"(<h3>Pareto curve (orange ring: the chosen mix)</h3><div class="grid" id="%s">%s</div>)",
      Id(step.index(), "pareto"), s);
}

// Compression: the eval dictionary as a table of scores, layers by candidate ratio.
std::string EvalDictionaryView(const v1::StepReport& step) {
  const json details = Details(step);
  if (!details.contains("eval_dictionary")) return "";
  const json& d = details["eval_dictionary"];
  if (!d.contains("layers") || !d["layers"].is_object()) return "";
  std::set<double> ratios;
  double lo = INFINITY, hi = -INFINITY;
  for (const auto& [layer, rows] : d["layers"].items()) {
    for (const auto& c : rows) {
      ratios.insert(c.value("ratio", 0.0));
      lo = std::min(lo, c.value("score", 0.0));
      hi = std::max(hi, c.value("score", 0.0));
    }
  }
  std::string s = absl::StrFormat(
      R"(<h3>Eval dictionary (%s per layer and candidate ratio)</h3><div class="scroll"><table id="%s"><thead><tr><th>layer</th>)",
      HtmlEscape(d.value("score", std::string("score"))), Id(step.index(), "eval-dictionary"));
  for (double r : ratios) absl::StrAppend(&s, "<th>", Num(r), "</th>");
  s += "</tr></thead><tbody>";
  for (const auto& [layer, rows] : d["layers"].items()) {
    absl::StrAppend(&s, "<tr><td>", HtmlEscape(layer), "</td>");
    std::map<double, double> by_ratio;
    for (const auto& c : rows) by_ratio[c.value("ratio", 0.0)] = c.value("score", 0.0);
    for (double r : ratios) {
      auto it = by_ratio.find(r);
      if (it == by_ratio.end()) {
        s += "<td></td>";
        continue;
      }
      const double t = hi > lo ? (it->second - lo) / (hi - lo) : 1.0;  // 0 worst .. 1 best
      absl::StrAppendFormat(&s, R"x(<td style="background:hsl(%d,60%%,85%%)">%s</td>)x", static_cast<int>(120 * t), Num(it->second));
    }
    s += "</tr>";
  }
  return s + "</tbody></table></div>";
}

std::string StepSection(const v1::StepReport& step) {
  const int i = step.index();
  std::string s = absl::StrFormat(R"(<section id="step-%d" class="step step-%s"><h2>%d. %s <span class="note">%s s</span></h2>)", i,
                                  HtmlEscape(step.step()), i, HtmlEscape(step.step()), Num(step.seconds()));
  if (!step.figures().empty()) s += FiguresBlock(step.figures());
  std::set<std::string> shown;
  if (step.step() == "analyze") s += AnalysisViews(step, shown);
  if (step.step() == "cross_layer_equalization") s += EqualizationViews(step, shown);
  if (step.step() == "mixed_precision") s += ParetoView(step, shown);
  s += EvalDictionaryView(step);
  // Other curves: training loss and accuracy, AdaRound's reconstruction error, ...
  std::string curves;
  for (const v1::Series& series : step.series()) {
    if (shown.count(series.name())) continue;
    curves += LineChart(series.name(), {&series});
  }
  if (!curves.empty()) absl::StrAppendFormat(&s, R"(<h3>Curves</h3><div class="grid" id="%s">%s</div>)", Id(i, "curves"), curves);
  if (step.layers_size() > 0) s += "<h3>Per layer</h3>" + LayerTable(Id(i, "layers"), step);
  const json details = Details(step);
  json rest = details;
  rest.erase("eval_dictionary");
  if (!rest.empty()) absl::StrAppend(&s, "<h3>Details</h3><pre>", HtmlEscape(rest.dump(1)), "</pre>");
  if (step.artifacts_size() > 0) {
    std::vector<std::string> names;
    for (const std::string& a : step.artifacts()) names.push_back(HtmlEscape(a));
    absl::StrAppend(&s, R"(<p class="note">Artifacts by the end of this step: )", absl::StrJoin(names, ", "), "</p>");
  }
  return s + "</section>";
}

}  // namespace

std::string HtmlEscape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string ReportToHtml(const v1::Report& report) {
  const std::string title = report.recipe().empty() ? "qopt report" : "qopt report: " + report.recipe();
  std::string s = absl::StrCat(R"(<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>)", HtmlEscape(title),
                               "</title><style>", kStyle, "</style></head><body>");
  absl::StrAppend(&s, "<header><h1>", HtmlEscape(title), R"(</h1><div class="meta">model )", HtmlEscape(report.model()));
  if (!report.model_sha256().empty()) absl::StrAppend(&s, " (sha256 ", HtmlEscape(report.model_sha256().substr(0, 12)), ")");
  for (const v1::DataInput& data : report.datasets()) {
    absl::StrAppend(&s, " · ", HtmlEscape(data.role()), " ", HtmlEscape(data.name()));
  }
  absl::StrAppend(&s, " · device ", HtmlEscape(report.device()));
  if (!report.worker_id().empty()) absl::StrAppend(&s, " · worker ", HtmlEscape(report.worker_id()));
  if (report.has_peak_memory_mib()) absl::StrAppend(&s, " · peak memory ", Num(report.peak_memory_mib()), " MiB");
  if (report.wall_seconds() > 0) absl::StrAppend(&s, " · ", Num(report.wall_seconds()), " s");
  if (!report.qopt_version().empty()) absl::StrAppend(&s, " · qopt ", HtmlEscape(report.qopt_version()));
  s += "</div></header><main>";

  // Summary: the headline figures, the model's cost, what each step took.
  s += R"(<section id="summary"><h2>Summary</h2>)";
  if (!report.metrics().empty()) s += FiguresBlock(report.metrics());
  if (report.has_cost()) {
    const v1::ModelCost& c = report.cost();
    absl::StrAppendFormat(&s, R"(<p class="note">Model cost for input %s: %s MACs, %s parameters (%s bytes).</p>)",
                          HtmlEscape(absl::StrJoin(c.input_shape(), "×")), Num(c.macs()), Num(c.parameters()),
                          Num(c.parameter_bytes()));
  }
  s += R"(<table id="steps"><thead><tr><th>step</th><th>seconds</th><th>key figures</th></tr></thead><tbody>)";
  for (const v1::StepReport& step : report.steps()) {
    std::vector<std::string> key;
    for (const char* k : {"top1", "fp32_top1", "output_sqnr_db", "quantized", "achieved_ratio", "adaround_error"}) {
      auto it = step.figures().find(k);
      if (it != step.figures().end()) key.push_back(absl::StrCat(k, " ", Num(it->second)));
    }
    absl::StrAppendFormat(&s, R"(<tr><td><a href="#step-%d">%d. %s</a></td><td>%s</td><td>%s</td></tr>)", step.index(),
                          step.index(), HtmlEscape(step.step()), Num(step.seconds()), HtmlEscape(absl::StrJoin(key, ", ")));
  }
  s += "</tbody></table></section>";
  for (const v1::StepReport& step : report.steps()) s += StepSection(step);
  s += R"(<p class="note">Written by qopt's worker from the job's typed report (report.json).</p></main></body></html>)";
  return s + "\n";
}

}  // namespace qopt
