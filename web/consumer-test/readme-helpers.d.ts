// App helpers the README examples call; only their types matter here.
declare const initialJwt: string;
declare function refreshJwt(): Promise<string | null>;
declare function render(id: string | null, state: string): void;
declare function reloadState(): void;
declare function showBanner(attempt: number, delayMs: number): void;
declare function append(from: string, text: string): void;
