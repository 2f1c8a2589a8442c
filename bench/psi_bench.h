// fedsilo-bench psi: private set intersection (secure/psi.h) among K parties
// of N ids each, every party working on its own thread as it would on its
// own machine: time per phase and the bytes that pass through the
// orchestrator.
#ifndef FEDSILO_BENCH_PSI_BENCH_H_
#define FEDSILO_BENCH_PSI_BENCH_H_

namespace fedsilo::bench {

struct PsiBenchOptions {
  int ids = 100000;  // per party
  int parties = 3;
  double overlap = 0.8;  // the share of each party's ids that every party holds
  bool json = false;
};

int RunPsiBench(const PsiBenchOptions& options);

}  // namespace fedsilo::bench

#endif  // FEDSILO_BENCH_PSI_BENCH_H_
