#!/usr/bin/env bash
# Builds the Android library (AAR): libprivcomm_ffi.so for arm64-v8a, armeabi-v7a and
# x86_64 with cargo-ndk, the Kotlin bindings, then the Gradle module.
#
# Needs: the Android NDK (r26 or newer) in ANDROID_NDK_HOME, the SDK (platform 35) in
# ANDROID_HOME, JDK 17, Gradle 8.9+ (or a wrapper made with `gradle wrapper`), and the
# rustup targets (added below). Output: android/build/outputs/aar/privcomm-android-release.aar
set -euo pipefail
cd "$(dirname "$0")/.."

: "${ANDROID_NDK_HOME:?set ANDROID_NDK_HOME to the Android NDK (r26 or newer)}"
: "${ANDROID_HOME:?set ANDROID_HOME to the Android SDK}"
command -v cmake >/dev/null || { echo "cmake is needed (libopus)" >&2; exit 1; }
command -v protoc >/dev/null || { echo "protoc is needed (libsignal)" >&2; exit 1; }

rustup target add aarch64-linux-android armv7-linux-androideabi x86_64-linux-android
command -v cargo-ndk >/dev/null || cargo install cargo-ndk --locked --version "^4"

# --platform 24 matches minSdk in android/build.gradle.kts.
cargo ndk --platform 24 -t arm64-v8a -t armeabi-v7a -t x86_64 \
  -o android/src/main/jniLibs \
  build --release --locked -p privcomm-ffi

# The Kotlin comes from the host build of the same sources (the metadata is the same on
# every target); it is committed, and this refreshes it if the FFI changed.
bash scripts/generate-bindings.sh
git diff --quiet -- android/src/main/kotlin bindings/swift ||
  echo "build-android: the generated bindings changed; commit them" >&2

cd android
if [ -x ./gradlew ]; then gradle_cmd=./gradlew; else gradle_cmd=gradle; fi
"$gradle_cmd" --no-daemon assembleRelease
ls -l build/outputs/aar/
