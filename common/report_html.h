// report.html: the typed Report as one self-contained page (inline CSS and SVG, no script,
// nothing fetched): summary figures, then one section per step with its figures, charts
// for what it measured (the analysis's per-layer sensitivity, output SQNR, weight ranges
// per channel and histograms; training curves; AdaRound's per-layer errors; compression's
// eval dictionary; mixed precision's pareto curve) and its per-layer table. Every name
// from the model or the recipe is escaped, so a hostile layer name is text, never markup.
#pragma once

#include <string>

#include "qopt/v1/report.pb.h"

namespace qopt {

/// The page for `report`.
std::string ReportToHtml(const v1::Report& report);

/// `text` with &, <, >, " and ' escaped for HTML text and attribute values.
std::string HtmlEscape(const std::string& text);

}  // namespace qopt
