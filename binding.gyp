{
  "targets": [
    {
      "target_name": "conntrack",
      "sources": [
        "native/netlink_socket.cc",
        "native/netns.cc",
        "native/wire.cc",
        "native/decode.cc",
        "native/requests.cc",
        "native/filter.cc",
        "native/records.cc",
        "native/dedup.cc",
        "native/summary.cc",
        "native/batch_sink.cc",
        "native/transaction.cc",
        "native/ct_dump.cc",
        "native/addon_values.cc",
        "native/addon_dump.cc",
        "native/addon_handle.cc",
        "native/addon_workers.cc",
        "native/addon.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-fvisibility=hidden", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
      "ldflags": ["-pthread"],
      "configurations": {
        "Release": {
          "cflags_cc": ["-O3"]
        }
      }
    }
  ]
}
