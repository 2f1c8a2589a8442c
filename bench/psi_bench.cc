#include "psi_bench.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "secure/psi.h"

namespace fedsilo::bench {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Runs `work(p)` for every party at once, one thread each; the wall time.
template <typename Work>
double EveryParty(int parties, const Work& work) {
  const Clock::time_point start = Clock::now();
  std::vector<std::thread> threads;
  for (int p = 0; p < parties; ++p) threads.emplace_back([&work, p] { work(p); });
  for (std::thread& t : threads) t.join();
  return Since(start);
}

}  // namespace

int RunPsiBench(const PsiBenchOptions& o) {
  // Party p's ids: the shared ones, then its own.
  const int shared = static_cast<int>(o.ids * o.overlap);
  std::vector<std::vector<std::string>> ids(static_cast<size_t>(o.parties));
  for (int p = 0; p < o.parties; ++p) {
    ids[p].reserve(static_cast<size_t>(o.ids));
    for (int i = 0; i < shared; ++i) ids[p].push_back(absl::StrCat("customer-", i));
    for (int i = shared; i < o.ids; ++i) ids[p].push_back(absl::StrCat("party-", p, "-", i));
  }
  std::vector<secure::PsiParty> parties;
  for (int p = 0; p < o.parties; ++p) {
    StatusOr<secure::PsiParty> party = secure::PsiParty::Create("bench/psi");
    if (!party.ok()) {
      std::fprintf(stderr, "psi bench: %s\n", std::string(party.status().message()).c_str());
      return 1;
    }
    parties.push_back(std::move(party).value());
  }
  // sets[p]: party p's ids as they stand after the phases so far.
  std::vector<std::string> sets(static_cast<size_t>(o.parties));
  uint64_t relayed = 0;  // bytes through the orchestrator (each message in and out)
  std::atomic<bool> failed{false};
  const double blind_s = EveryParty(o.parties, [&](int p) {
    StatusOr<std::string> points = parties[p].Blind(ids[p]);
    if (points.ok()) {
      sets[p] = std::move(points).value();
    } else {
      failed = true;
    }
  });
  for (const std::string& s : sets) relayed += 2 * s.size();
  // Hop h: party p raises party (p - h)'s points to its scalar.
  double reblind_s = 0;
  for (int hop = 1; hop < o.parties; ++hop) {
    std::vector<std::string> next(sets.size());
    reblind_s += EveryParty(o.parties, [&](int p) {
      const int owner = (p - hop + o.parties) % o.parties;
      StatusOr<std::string> again = parties[p].Reblind(sets[owner]);
      if (again.ok()) {
        next[owner] = std::move(again).value();
      } else {
        failed = true;
      }
    });
    sets = std::move(next);
    // The last hop's points go to the orchestrator only.
    for (const std::string& s : sets) relayed += (hop + 1 < o.parties ? 2 : 1) * s.size();
  }
  Clock::time_point start = Clock::now();
  StatusOr<std::vector<std::vector<int64_t>>> rows =
      secure::IntersectBlinded(std::vector<absl::string_view>(sets.begin(), sets.end()));
  const double intersect_s = Since(start);
  if (failed || !rows.ok()) {
    std::fprintf(stderr, "psi bench: %s\n",
                 failed ? "a blinding failed" : std::string(rows.status().message()).c_str());
    return 1;
  }
  // Each party's rows in the intersection, back to it.
  for (const auto& r : *rows) relayed += r.size() * sizeof(int64_t);
  const size_t intersection = (*rows)[0].size();
  if (intersection != static_cast<size_t>(shared)) {
    std::fprintf(stderr, "psi bench: found %zu shared ids, expected %d\n", intersection, shared);
    return 1;
  }
  const double total_s = blind_s + reblind_s + intersect_s;
  std::printf("private set intersection, %d parties x %d ids (%d shared), %u threads\n", o.parties,
              o.ids, shared, std::thread::hardware_concurrency());
  std::printf("  blind %.2f s, reblind %.2f s (%d hops), intersect %.2f s: %.2f s in all\n",
              blind_s, reblind_s, o.parties - 1, intersect_s, total_s);
  std::printf("  %.1f MB through the orchestrator\n", relayed / 1e6);
  if (o.json) {
    std::printf("%s\n", nlohmann::json{{"benchmark", "psi"},
                                       {"parties", o.parties},
                                       {"ids", o.ids},
                                       {"intersection", intersection},
                                       {"blind_s", blind_s},
                                       {"reblind_s", reblind_s},
                                       {"intersect_s", intersect_s},
                                       {"total_s", total_s},
                                       {"relayed_bytes", relayed}}
                            .dump()
                            .c_str());
  }
  return 0;
}

}  // namespace fedsilo::bench
