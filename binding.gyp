{
  "targets": [
    {
      "target_name": "tfalign_native",
      "sources": ["native/addon.cc", "native/sgemm.cc", "native/elementwise.cc"],
      "cflags_cc": ["-O3", "-std=c++17", "-fno-exceptions"],
      "cflags_cc!": ["-fno-rtti"],
      "conditions": [["OS!='linux'", {"cflags_cc": []}]]
    }
  ]
}
