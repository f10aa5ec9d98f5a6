// Where the example app's relay runs. On the Android emulator the host machine is
// 10.0.2.2; `cargo run -p privcomm-server -- --bind 0.0.0.0:8000` serves it there.
export const RELAY_URL = 'http://10.0.2.2:8000';
