// react-native-privcomm: installs the core's TurboModule, then exports the typed API.
import './native';

export * from './api';
