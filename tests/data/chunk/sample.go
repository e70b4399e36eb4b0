package cache

import (
	"sync"
	"time"
)

// Cache is a map with expiry.
type Cache struct {
	mu    sync.Mutex
	items map[string]entry
}

type entry struct {
	value   string
	expires time.Time
}

// Get returns the value of key if it has not expired.
func (c *Cache) Get(key string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.items[key]
	if !ok || time.Now().After(e.expires) {
		return "", false
	}
	return e.value, true
}

func New() *Cache {
	return &Cache{items: make(map[string]entry)}
}
