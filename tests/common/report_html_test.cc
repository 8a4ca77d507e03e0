// report.html from a typed report: every step has its section, the analysis its charts,
// and names from the model are text, never markup.
#include "report_html.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"

namespace qopt {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

v1::Series MakeSeries(const std::string& name, std::vector<double> x, std::vector<double> y) {
  v1::Series s;
  s.set_name(name);
  s.mutable_x()->Add(x.begin(), x.end());
  s.mutable_y()->Add(y.begin(), y.end());
  return s;
}

v1::Report AnalysisReport(const std::string& layer) {
  v1::Report r;
  r.set_recipe("w4a8 <b>check</b>");
  r.set_model("model.pt");
  r.set_device("cpu");
  (*r.mutable_metrics())["top1"] = 0.91;
  v1::StepReport* analyze = r.add_steps();
  analyze->set_step("analyze");
  analyze->set_index(1);
  (*analyze->mutable_figures())["fp32"] = 0.93;
  (*analyze->mutable_figures())["quantized"] = 0.90;
  for (const std::string& name : {std::string("conv1"), layer}) {
    v1::LayerRow* row = analyze->add_layers();
    row->set_layer(name);
    (*row->mutable_labels())["op_type"] = "Conv";
    (*row->mutable_figures())["only_enabled"] = 0.905;
    (*row->mutable_figures())["only_disabled"] = 0.925;
    (*row->mutable_figures())["output_sqnr_db"] = 21.5;
    *analyze->add_series() = MakeSeries(name + " weight min per channel", {0, 1, 2}, {-1, -0.5, -2});
    *analyze->add_series() = MakeSeries(name + " weight max per channel", {0, 1, 2}, {1, 0.7, 2.5});
    *analyze->add_series() = MakeSeries(name + " weight histogram", {-1, 0, 1}, {3, 10, 2});
  }
  v1::StepReport* qat = r.add_steps();
  qat->set_step("qat");
  qat->set_index(2);
  *qat->add_series() = MakeSeries("training loss", {1, 2, 3}, {0.9, 0.5, 0.4});
  return r;
}

TEST(ReportHtmlTest, EveryStepHasItsSectionAndTheAnalysisItsCharts) {
  const std::string html = ReportToHtml(AnalysisReport("layer1.0.conv2"));
  for (const char* id : {R"(id="summary")", R"(id="step-1")", R"(id="step-1-sensitivity")", R"(id="step-1-sqnr")",
                         R"(id="step-1-weight-ranges")", R"(id="step-1-histograms")", R"(id="step-1-layers")",
                         R"(id="step-2")", R"(id="step-2-curves")"}) {
    EXPECT_THAT(html, HasSubstr(id));
  }
  EXPECT_THAT(html, HasSubstr("<svg"));
  EXPECT_THAT(html, HasSubstr("layer1.0.conv2 weight range per output channel"));
  // Self-contained: nothing to fetch, no script.
  EXPECT_THAT(html, Not(HasSubstr("http://")));
  EXPECT_THAT(html, Not(HasSubstr("https://")));
  EXPECT_THAT(html, Not(HasSubstr("<script")));
  EXPECT_THAT(html, Not(HasSubstr("<link")));
}

TEST(ReportHtmlTest, NamesFromTheModelAreEscaped) {
  const std::string hostile = R"(x"><script>alert('pwned')</script><img src=x onerror=alert(1)>)";
  const std::string html = ReportToHtml(AnalysisReport(hostile));
  EXPECT_THAT(html, Not(HasSubstr("<script")));
  EXPECT_THAT(html, Not(HasSubstr("<img")));
  EXPECT_THAT(html, Not(HasSubstr("<b>check</b>")));
  EXPECT_THAT(html, HasSubstr("&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;"));
  EXPECT_EQ(HtmlEscape(R"(<a href="x">&'</a>)"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;");
}

TEST(ReportHtmlTest, MixedPrecisionShowsItsParetoCurveWithTargetAndChoice) {
  v1::Report r;
  v1::StepReport* amp = r.add_steps();
  amp->set_step("mixed_precision");
  amp->set_index(3);
  (*amp->mutable_figures())["target"] = 0.90;
  (*amp->mutable_figures())["chosen_relative_bitops"] = 0.55;
  (*amp->mutable_figures())["chosen_score"] = 0.905;
  *amp->add_series() = MakeSeries("pareto", {0.3, 0.55, 0.8, 2.0}, {0.85, 0.905, 0.915, 0.92});
  const std::string html = ReportToHtml(r);
  EXPECT_THAT(html, HasSubstr(R"(id="step-3-pareto")"));
  EXPECT_THAT(html, HasSubstr("target 0.9"));
  EXPECT_THAT(html, HasSubstr("chosen: bit-ops 0.55"));
  size_t points = 0;
  for (size_t at = html.find("<circle r=\"3.5\""); at != std::string::npos; at = html.find("<circle r=\"3.5\"", at + 1)) ++points;
  EXPECT_EQ(points, 4u);
  // Shown once, as the pareto chart, not again among the curves.
  EXPECT_THAT(html, Not(HasSubstr(R"(id="step-3-curves")")));
}

TEST(ReportHtmlTest, AnEmptyReportStillRenders) {
  const std::string html = ReportToHtml(v1::Report());
  EXPECT_THAT(html, HasSubstr("<!DOCTYPE html>"));
  EXPECT_THAT(html, HasSubstr(R"(id="summary")"));
  EXPECT_THAT(html, HasSubstr("</html>"));
}

}  // namespace
}  // namespace qopt
