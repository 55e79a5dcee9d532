package agent

import "errors"

func (p *Pipeline) newLiveSource() (liveSource, error) {
	return nil, errors.New("live capture is not wired yet")
}
