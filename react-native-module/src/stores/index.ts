export { createChatStore, type ChatState, type ChatStore } from './chatStore';
export { createUserStore, type UserState, type UserStore } from './userStore';
