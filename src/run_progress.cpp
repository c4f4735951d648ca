// The progress the run shows: its counts sampled into rates, and the bar or status line drawn from
// them at most every kBarInterval (kLineInterval for status lines).
#include "pcopy/runner.hpp"

#include "pcopy/progress.hpp"

namespace pcopy {

void Runner::sample_rates(double t) {
  meter_.sample(t - start_, bytes_done_);
  work_meter_.sample(t - start_, work_of(files_done_, bytes_done_));
}

ProgressState Runner::progress_state() const {
  ProgressState s;
  s.files_done = files_done_;
  s.files_total = files_total_;
  s.bytes_done = bytes_done_;
  s.bytes_total = bytes_total_;
  s.counting = !walk_done_;
  s.elapsed_s = now_s() - start_;
  s.rate = meter_.rate();
  s.work_rate = work_meter_.rate();
  s.dry_run = opt_.dry_run;
  return s;
}

void Runner::tick(bool force) {
  double t = now_s();
  if (!console_.bar() && !console_.status_lines()) return;
  double interval = console_.bar() ? kBarInterval : kLineInterval;
  if (!force && t - last_draw_ < interval) return;
  last_draw_ = t;
  sample_rates(t);
  console_.draw(progress_state());
}

}  // namespace pcopy
