import { readFile } from 'fs/promises';

const cache = new Map();

export async function loadConfig(path) {
  if (cache.has(path)) {
    return cache.get(path);
  }
  const text = await readFile(path, 'utf8');
  const config = JSON.parse(text);
  cache.set(path, config);
  return config;
}

const isEnabled = (config, flag) => Boolean(config.flags && config.flags[flag]);

export class Store {
  constructor(config) {
    this.config = config;
  }

  get(key) {
    return this.config[key];
  }
}
