// What a silo reads from its own folder and trusts least: its privacy policy
// (policy.yaml), its dataset catalog (datasets.yaml) and its privacy ledger
// (privacy-ledger.json), any of which a careless or hostile hand may have
// written. Each either loads or is refused with an error naming its file;
// what loads is well-formed (a catalog entry names exactly one source, a
// policy's numbers are in range, a ledger's steps are never negative).
#include <string>

#include "fuzz_util.h"
#include "silo/dataset_catalog.h"
#include "silo/privacy_guard.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fedsilo;
  if (size > 64 * 1024) return 0;
  fuzz::Parts parts(data, size);
  absl::string_view policy, catalog, ledger;
  parts.Next(&policy);
  parts.Next(&catalog);
  parts.Next(&ledger);

  const std::string policy_path = fuzz::TempFile("policy.yaml", policy);
  auto guard = silo::PrivacyGuard::Open(policy_path, "");
  if (!guard.ok()) {
    FEDSILO_FUZZ_CHECK(std::string(guard.status().message()).find(policy_path) !=
                       std::string::npos);
  } else {
    for (const auto& [name, rules] : (*guard)->policy()) {
      FEDSILO_FUZZ_CHECK(rules.min_silos >= 1);
      FEDSILO_FUZZ_CHECK(rules.max_epsilon >= 0);
    }
  }

  const std::string catalog_path = fuzz::TempFile("datasets.yaml", catalog);
  auto datasets = silo::LoadDatasetCatalog(catalog_path, "silo-1");
  if (!datasets.ok()) {
    FEDSILO_FUZZ_CHECK(std::string(datasets.status().message()).find(catalog_path) !=
                       std::string::npos);
  } else {
    for (const auto& [name, entry] : *datasets) {
      const int given = !entry.builtin.empty() + !entry.csv.empty() + !entry.idx.empty();
      FEDSILO_FUZZ_CHECK(given == 1);
    }
  }

  const std::string ledger_path = fuzz::TempFile("privacy-ledger.json", ledger);
  auto read = silo::PrivacyGuard::Open("", ledger_path);
  if (!read.ok()) {
    FEDSILO_FUZZ_CHECK(std::string(read.status().message()).find(ledger_path) != std::string::npos);
    return 0;
  }
  const std::vector<silo::LedgerEntry> entries = (*read)->Entries();
  for (const silo::LedgerEntry& e : entries) {
    FEDSILO_FUZZ_CHECK(e.steps >= 0 && e.planned_steps >= 0);
    (void)(*read)->Use(e.dataset);
  }
  return 0;
}
