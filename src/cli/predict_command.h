// `fedsilo predict MODEL --data FILE.csv`: scores new rows with a trained
// tabular model. MODEL is a run (id, unique prefix or job id in --workdir) or
// an .fsm file written by `fedsilo export`, which carries the run's resolved
// job. The rows are prepared exactly as the silos prepared theirs: the same
// columns, one-hot vocabularies, and the federation's statistics for missing
// values and scaling (preprocess.statistics of the job).
//
// A vertical run's model is in parts, one at each party: its rows are given
// per party (--data PARTY=FILE), aligned by the parties' id columns as in
// training, and each party's part scores its own columns; the label
// owner's top model combines them (docs/vertical.md, Predicting).
#ifndef FEDSILO_CLI_PREDICT_COMMAND_H_
#define FEDSILO_CLI_PREDICT_COMMAND_H_

#include <string>
#include <vector>

#include "core/status.h"

namespace fedsilo::cli {

struct PredictOptions {
  std::string model;  // run id / prefix / job id, or an .fsm file
  std::string workdir = ".";
  int round = 0;     // a run's checkpoint instead of its final model
  // CSV with a header; the label column is optional. A vertical run: one
  // "PARTY=FILE" per party.
  std::vector<std::string> data;
  std::string out;   // predictions CSV; empty = standard output
  bool json = false;
};

// Writes one line per row: row (1-based line of data), predicted class, the
// probability of each class, and the label when the file has one. With
// labels, also reports loss, accuracy and (two classes) precision, recall,
// ROC AUC, as the run's evaluation computes them. InvalidArgument naming the
// file and column for data that does not fit the model's job. A vertical
// run's lines are one per person every party's file holds, by the label
// owner's id, in the order of its file.
Status PredictCommand(const PredictOptions& options);

}  // namespace fedsilo::cli

#endif  // FEDSILO_CLI_PREDICT_COMMAND_H_
