// Android library (AAR): the generated Kotlin bindings (src/main/kotlin/org/privcomm/core),
// the Keystore secret store (src/main/kotlin/org/privcomm/android) and libprivcomm_ffi.so
// for each ABI (src/main/jniLibs, built by scripts/build-android.sh with cargo-ndk).
plugins {
    id("com.android.library") version "8.7.3"
    id("org.jetbrains.kotlin.android") version "2.1.0"
}

android {
    namespace = "org.privcomm.android"
    compileSdk = 35

    defaultConfig {
        minSdk = 24
        consumerProguardFiles("consumer-rules.pro")
        testInstrumentationRunner = "androidx.test.runner.AndroidJUnitRunner"
        ndk {
            abiFilters += listOf("arm64-v8a", "armeabi-v7a", "x86_64")
        }
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }

    sourceSets["main"].jniLibs.srcDirs("src/main/jniLibs")

    testOptions {
        // The JVM tests (src/test) need the core built for the host and a relay:
        // see README.md, "Tests"; CI runs them through `cargo test -p privcomm-ffi`.
        unitTests.all {
            it.useJUnitPlatform()
            it.systemProperty("privcomm.relay", System.getProperty("privcomm.relay") ?: "")
            it.systemProperty(
                "uniffi.component.privcomm.libraryOverride",
                System.getProperty("uniffi.component.privcomm.libraryOverride") ?: "",
            )
        }
    }
}

kotlin {
    jvmToolchain(17)
}

dependencies {
    // JNA with its Android native dispatch libraries (the AAR, not the JVM jar).
    implementation("net.java.dev.jna:jna:5.17.0@aar")
    implementation("org.jetbrains.kotlinx:kotlinx-coroutines-core:1.10.1")

    testImplementation("net.java.dev.jna:jna:5.17.0")
    testImplementation("org.junit.jupiter:junit-jupiter:5.11.4")
    testRuntimeOnly("org.junit.platform:junit-platform-launcher:1.11.4")

    // On a device: the Keystore store with real Keystore keys (src/androidTest).
    androidTestImplementation("androidx.test.ext:junit:1.2.1")
    androidTestImplementation("androidx.test:runner:1.6.2")
}
