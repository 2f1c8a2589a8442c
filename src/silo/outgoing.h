// Outgoing: what of an error may leave the silo. Every error a silo answers a
// task with passes through it on the way out (SiloRuntime and SiloAgent do
// this), so that nothing derived from a record -- a value, a path, a line --
// reaches the orchestrator, where every user of the federation sees it.
#ifndef FEDSILO_SILO_OUTGOING_H_
#define FEDSILO_SILO_OUTGOING_H_

#include <string>

#include "core/status.h"

namespace fedsilo::silo {

// A shareable error (core/status.h) leaves as it is, without its private
// detail; any other keeps its code and gets a generic reason naming `silo`.
// The whole error (with the detail) goes to this process's log, the silo's
// own. OK stays OK; the result is always shareable.
Status Outgoing(const Status& status, const std::string& silo);

}  // namespace fedsilo::silo

#endif  // FEDSILO_SILO_OUTGOING_H_
