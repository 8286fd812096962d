{
  "targets": [
    {
      "target_name": "conntrack",
      # Every native/*.cc (not native/tools/): adding or splitting a source file needs no edit here.
      "sources": ["<!@(node -e \"for (const f of require('fs').readdirSync('native').sort()) if (f.endsWith('.cc')) console.log('native/' + f)\")"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      # Exceptions: any C++ exception a call from JS throws becomes a JS error (_ALL: not only
      # Napi::Error), and one that cannot be thrown because the environment is being torn down (a
      # worker terminated) is dropped instead of ending the process (_SWALLOW_UNTHROWABLE_).
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED", "NAPI_CPP_EXCEPTIONS",
                  "NODE_ADDON_API_CPP_EXCEPTIONS_ALL", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-fvisibility=hidden", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
      # native/exports.map: export only the Node-API entry points (see native/glibc_compat.cc).
      "ldflags": ["-pthread", "-Wl,--version-script=<(module_root_dir)/native/exports.map"],
      "configurations": {
        "Release": {
          "cflags_cc": ["-O3"]
        }
      }
    }
  ]
}
