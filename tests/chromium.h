#pragma once
// Rendering a written HTML page in headless Chromium, as a person's browser would.
#include <cstdlib>
#include <filesystem>
#include <string>

#include "fixtures.h"

namespace vavae::test {

inline bool have_chromium() { return std::filesystem::exists("/usr/bin/chromium"); }

struct RenderedPage {
  int exit_code = -1;
  std::string dom, log;  // the DOM after scripts ran; Chromium's stderr (console messages land here)
};

// Loads `page` with JavaScript on and dumps its DOM; `work` holds the profile and the output.
inline RenderedPage render_in_chromium(const std::string& page, const std::string& work) {
  const std::string command =
      "timeout 120 /usr/bin/chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run "
      "--disable-background-networking --disable-component-update --disable-sync --user-data-dir=" + work +
      "/profile --enable-logging=stderr --v=0 --dump-dom file://" + std::filesystem::absolute(page).string() + " > " + work +
      "/dom.html 2> " + work + "/chromium.log";
  RenderedPage r;
  r.exit_code = std::system(command.c_str());
  r.dom = read_file(work + "/dom.html");
  r.log = read_file(work + "/chromium.log");
  return r;
}

}  // namespace vavae::test
