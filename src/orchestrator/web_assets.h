// The dashboard's files (web/ and the vendored uPlot), built into the binary
// by cmake/embed_files.cmake.
#ifndef FEDSILO_ORCHESTRATOR_WEB_ASSETS_H_
#define FEDSILO_ORCHESTRATOR_WEB_ASSETS_H_

#include <cstddef>

namespace fedsilo::orchestrator {

struct WebAsset {
  const char* path;          // "/app.js"
  const char* content_type;  // "text/javascript; charset=utf-8"
  const unsigned char* data;
  size_t size;
};

extern const WebAsset kWebAssets[];
extern const size_t kWebAssetCount;

}  // namespace fedsilo::orchestrator

#endif  // FEDSILO_ORCHESTRATOR_WEB_ASSETS_H_
